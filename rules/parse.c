/*
 * parse.c - rule-file text -> struct rl_ruleset.
 *
 * A rule file is line oriented.  Each line is empty, a comment ('#' at the
 * start of a word), a global directive from the table below ("strategy
 * gcra", "default 200/day; 50/hour", "include sites/NAME.rules"), or a path
 * rule: a pattern starting with '/', its limits, then options
 * ("/login 5/minute methods=POST scope=auth message=\"...\"").
 *
 * Every problem is reported as "FILE:LINE:COL: message", all of them, not
 * just the first; any error means no ruleset is returned (nothing is
 * half-loaded).  Globals may appear anywhere (order does not matter; each
 * may be set once), so patterns, keys and strategies are resolved in a
 * final pass once all globals are known.
 *
 * The library does no I/O: includes go through the caller's rl_io.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_TOKENS 64
#define MAX_NETS 64
#define MAX_MESSAGE 1024
#define MAX_NAME 64
#define MAX_DIRECTIVES 48
#define UNIX_PATH_MAX 107       /* sun_path holds 108 bytes with the NUL */
#define DEFAULT_UPSTREAM_TIMEOUT_MS 30000
/* client-timeout: nginx's client_header_timeout, client_body_timeout and
 * send_timeout, and Apache's Timeout, are 60 s by default.  The web server
 * bounds its own client that way, so a web server passing on a slow but
 * live client is never cut off before it would cut the client off itself,
 * and a stalled one holds a worker at most a minute. */
#define DEFAULT_CLIENT_TIMEOUT_MS 60000
#define LEASE_MARGIN_MS 10000   /* default lease: upstream-timeout + this */

/* A place in a rule file; col is 0-based. */
struct loc {
	const char *file;
	unsigned line;
	size_t col;
};

/* A word of a line.  s/len/col: the raw text as written; v/vlen: its value
 * with quotes removed and escapes applied (in arena memory when quoted). */
struct tok {
	const char *s;
	size_t len;
	size_t col;
	const char *v;
	size_t vlen;
	int quoted;             /* 0, or a QUOTED_* form */
};

/* How a quoted word maps onto its line, for the columns of errors inside
 * its value: QUOTED_SIMPLE is "value" or name="value" without escapes (the
 * value's byte k is at the quote's column + 1 + k); anything else,
 * QUOTED_OTHER, has errors point at the value's start. */
enum { QUOTED_SIMPLE = 1, QUOTED_OTHER = 2 };

/* A rule while loading: the public rule plus what the final pass needs. */
struct prule {
	struct rl_rule r;
	struct loc where;       /* the pattern */
	const char *pat;
	size_t pat_len;
	int has_strategy;
	struct loc strategy_at;
	int has_burst;
	struct loc burst_at, cost_at, limits_at;
	int has_cost;
	int has_max_body;
	struct loc bandwidth_at, deduct_at;
};

struct pstate {
	struct rl_ruleset *rs;
	struct rl_arena *a;
	const struct rl_io *io;
	struct rl_report *rep;
	int oom;
	/* include stack: identities of the files being parsed */
	char *stack[RL_INCLUDE_DEPTH_MAX + 1];
	int depth;
	/* where each global was set (line 0: not set); the value's place for
	 * the checks of the final pass */
	struct loc seen[MAX_DIRECTIVES];
	struct loc value_at[MAX_DIRECTIVES];
	struct prule **rules;
	size_t nrules, caprules;
	struct loc defaults_at, application_at;
	int has_strategy;
	const char *top;        /* the top file's name, for file-wide warnings */
	/* every file read so far: identity (arena) and the include that
	 * read it (line 0: the top file) */
	struct read_file {
		const char *id;
		struct loc from;
	} *read;
	size_t nread;
};

/* ------------------------------------------------------------------ */
/* Reporting                                                           */

static int
report_add(char ***list, size_t *n, const char *line)
{
	char **nl = realloc(*list, (*n + 1) * sizeof(**list));

	if (nl == NULL)
		return -1;
	*list = nl;
	nl[*n] = strdup(line);
	if (nl[*n] == NULL)
		return -1;
	(*n)++;
	return 0;
}

static void __attribute__((format(printf, 4, 5)))
diag(struct pstate *ps, int warning, const struct loc *at, const char *fmt, ...)
{
	char msg[RL_MSG_MAX + 64], line[RL_MSG_MAX + 4200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(line, sizeof(line), "%s:%u:%zu: %s%s", at->file, at->line,
		 at->col + 1, warning ? "warning: " : "", msg);
	if (warning) {
		if (report_add(&ps->rep->warnings, &ps->rep->nwarnings, line))
			ps->oom = 1;
		return;
	}
	if (ps->rep->nerrors >= RL_REPORT_MAX_ERRORS) {
		ps->rep->truncated = 1;
		return;
	}
	if (report_add(&ps->rep->errors, &ps->rep->nerrors, line))
		ps->oom = 1;
}

#define error_at(ps, at, ...) diag(ps, 0, at, __VA_ARGS__)
#define warn_at(ps, at, ...) diag(ps, 1, at, __VA_ARGS__)

void
rl_report_free(struct rl_report *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nerrors; i++)
		free(r->errors[i]);
	for (size_t i = 0; i < r->nwarnings; i++)
		free(r->warnings[i]);
	free(r->errors);
	free(r->warnings);
	memset(r, 0, sizeof(*r));
}

/* Offending text for a message inside the format's own quotes: rl_quote's
 * escaping without its surrounding '"'. */
static const char *
quote(const char *s, size_t len, char *out, size_t cap)
{
	char tmp[200];
	size_t n;

	rl_quote(tmp, sizeof(tmp), s, len);
	n = strlen(tmp);
	snprintf(out, cap, "%.*s", (int)(n - 2), tmp + 1);
	return out;
}

#define Q(tk, buf) quote((tk)->s, (tk)->len, buf, sizeof(buf))

static struct loc
loc_of(const struct loc *line, size_t col)
{
	struct loc l = *line;

	l.col = col;
	return l;
}

/* ------------------------------------------------------------------ */
/* Small value parsers                                                 */

static int
tok_is(const struct tok *t, const char *word)
{
	return !t->quoted && t->len == strlen(word) &&
	       memcmp(t->s, word, t->len) == 0;
}

/* Decimal without sign; -1 on junk or overflow past max. */
static int
parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int
name_ok(const char *s, size_t len, const char *extra)
{
	if (len == 0 || len > MAX_NAME)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)s[i]) && strchr(extra, s[i]) == NULL)
			return 0;
	return 1;
}

/* A method of up to 7 bytes packed into a word, first byte lowest, its
 * length in the top byte (so that "GET" and "GET\0" differ). */
#define METHOD_WORD(n, a, b, c, d, e, f, g) \
	((uint64_t)(a) | (uint64_t)(b) << 8 | (uint64_t)(c) << 16 | \
	 (uint64_t)(d) << 24 | (uint64_t)(e) << 32 | (uint64_t)(f) << 40 | \
	 (uint64_t)(g) << 48 | (uint64_t)(n) << 56)

/* By the bytes packed into one word, upper-cased on the way: this runs on
 * every request, and the word stays in a register (upper-casing into a
 * buffer and comparing that costs a store-forwarding stall, ~4 ns). */
unsigned
rl_method_bit(const char *m, size_t len)
{
	uint64_t w = (uint64_t)len << 56;

	/* any ASCII case: Apache passes "post" on as it came; "" packs to
	 * a word no method has */
	if (len > 7)
		return RL_METHOD_OTHER;
	for (size_t i = 0; i < len; i++) {
		unsigned c = (unsigned char)m[i];
		if (c - 'a' < 26u)
			c -= 'a' - 'A';
		w |= (uint64_t)c << (8 * i);
	}
	switch (w) {
	case METHOD_WORD(3, 'G', 'E', 'T', 0, 0, 0, 0):
		return RL_METHOD_GET;
	case METHOD_WORD(4, 'P', 'O', 'S', 'T', 0, 0, 0):
		return RL_METHOD_POST;
	case METHOD_WORD(4, 'H', 'E', 'A', 'D', 0, 0, 0):
		return RL_METHOD_HEAD;
	case METHOD_WORD(3, 'P', 'U', 'T', 0, 0, 0, 0):
		return RL_METHOD_PUT;
	case METHOD_WORD(6, 'D', 'E', 'L', 'E', 'T', 'E', 0):
		return RL_METHOD_DELETE;
	case METHOD_WORD(5, 'P', 'A', 'T', 'C', 'H', 0, 0):
		return RL_METHOD_PATCH;
	case METHOD_WORD(7, 'O', 'P', 'T', 'I', 'O', 'N', 'S'):
		return RL_METHOD_OPTIONS;
	case METHOD_WORD(5, 'T', 'R', 'A', 'C', 'E', 0, 0):
		return RL_METHOD_TRACE;
	case METHOD_WORD(7, 'C', 'O', 'N', 'N', 'E', 'C', 'T'):
		return RL_METHOD_CONNECT;
	}
	return RL_METHOD_OTHER;
}

/* ------------------------------------------------------------------ */
/* Tokenizer                                                           */

/* The QUOTED_* form of a word s[0..len) that holds a quote. */
static int
quote_form(const char *s, size_t len)
{
	const char *q = memchr(s, '"', len), *eq = memchr(s, '=', len);

	if (q == NULL || memchr(s, '\\', len) != NULL ||
	    s[len - 1] != '"' || q == s + len - 1 ||
	    memchr(q + 1, '"', (size_t)(s + len - 1 - (q + 1))) != NULL)
		return QUOTED_OTHER;
	return q == s || (eq != NULL && q == eq + 1) ? QUOTED_SIMPLE :
						       QUOTED_OTHER;
}

/* Split one line into words.  Returns the count, or -1 after reporting. */
static int
tokenize(struct pstate *ps, const struct loc *ln, const char *s, size_t len,
	 struct tok *toks)
{
	int n = 0;
	size_t i = 0;
	char qb[200];

	while (i < len) {
		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (i >= len || s[i] == '#')
			break;
		if (n == MAX_TOKENS) {
			struct loc at = loc_of(ln, i);
			error_at(ps, &at, "too many words on one line (more than %d)",
				 MAX_TOKENS);
			return -1;
		}
		struct tok *t = &toks[n];
		size_t start = i;
		int quoted = 0;
		size_t vlen = 0;

		/* First pass: find the end, check quotes. */
		while (i < len && s[i] != ' ' && s[i] != '\t') {
			if (s[i] == '"') {
				size_t q = i++;
				quoted = 1;
				while (i < len && s[i] != '"') {
					if (s[i] == '\\' && i + 1 < len)
						i++;
					i++;
					vlen++;
				}
				if (i >= len) {
					struct loc at = loc_of(ln, q);
					error_at(ps, &at,
						 "unterminated quoted string \"%s\": expected a closing '\"'",
						 quote(s + q, len - q, qb, sizeof(qb)));
					return -1;
				}
				i++;
			} else {
				i++;
				vlen++;
			}
		}
		t->s = s + start;
		t->len = i - start;
		t->col = start;
		t->quoted = quoted ? quote_form(t->s, t->len) : 0;
		if (!quoted) {
			t->v = t->s;
			t->vlen = t->len;
		} else {
			char *v = rl_arena_alloc(ps->a, vlen + 1);
			size_t o = 0;

			if (v == NULL) {
				ps->oom = 1;
				return -1;
			}
			for (size_t j = start; j < i; j++) {
				if (s[j] == '"')
					continue;
				if (s[j] == '\\' && j + 1 < i) {
					j++;
					if (s[j] != '"' && s[j] != '\\') {
						struct loc at = loc_of(ln, j - 1);
						error_at(ps, &at,
							 "unknown escape \"\\%c\" in a quoted string: expected \\\" or \\\\",
							 isprint((unsigned char)s[j]) ? s[j] : '?');
						return -1;
					}
				}
				v[o++] = s[j];
			}
			t->v = v;
			t->vlen = o;
		}
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Settings                                                            */

static struct rl_limit *
limits_at(struct pstate *ps, const struct loc *ln, const char *s, size_t len,
	  size_t col, size_t *n)
{
	struct rl_limit tmp[RL_MAX_LIMITS];
	struct rl_diag d;

	if (rl_limits_parse(s, len, tmp, n, &d) != 0) {
		struct loc at = loc_of(ln, col + d.col);
		error_at(ps, &at, "%s", d.msg);
		return NULL;
	}
	struct rl_limit *l = rl_arena_alloc(ps->a, *n * sizeof(*l));
	if (l == NULL) {
		ps->oom = 1;
		return NULL;
	}
	memcpy(l, tmp, *n * sizeof(*l));
	return l;
}

/* Raw text from the first to the last of toks[0..n). */
static void
span(const struct tok *toks, size_t n, const char **s, size_t *len)
{
	*s = toks[0].s;
	*len = (size_t)(toks[n - 1].s + toks[n - 1].len - toks[0].s);
}

/* Limits written in toks[0..n): their text and the column of its first
 * byte.  One quoted word ("10 per hour") is its value, so a quoted limit
 * string reads as the unquoted one. */
static void
limit_words(const struct tok *toks, size_t n, const char **s, size_t *len,
	    size_t *col)
{
	if (n == 1 && toks[0].quoted) {
		*s = toks[0].v;
		*len = toks[0].vlen;
		/* "..." without escapes: the value's columns are the
		 * line's, one after the quote; else the word's start */
		*col = toks[0].col + (toks[0].quoted == QUOTED_SIMPLE &&
				      toks[0].s[0] == '"');
		return;
	}
	span(toks, n, s, len);
	*col = toks[0].col;
}

/* Query parameters of a storage URI: "a=1&b=2".  Calls back per pair. */
static int
storage_query(struct pstate *ps, const struct loc *at, const char *q,
	      size_t len, struct rl_storage *st)
{
	char qb[200];

	while (len > 0) {
		const char *amp = memchr(q, '&', len);
		size_t plen = amp ? (size_t)(amp - q) : len;
		const char *eq = memchr(q, '=', plen);
		size_t nlen = eq ? (size_t)(eq - q) : plen;
		const char *v = eq ? eq + 1 : q + plen;
		size_t vlen = eq ? plen - nlen - 1 : 0;
		uint64_t n;

#define KEY(k) (nlen == strlen(k) && memcmp(q, k, nlen) == 0)
		if (KEY("size") && st->kind == RL_STORAGE_SHM) {
			struct rl_diag dg;
			/* the sizes of the rest of the file (64M, 64MB,
			 * 64MiB: binary units) */
			if (rl_size_parse(v, vlen, &n, &dg) ||
			    n < (1u << 20) || n > (64ULL << 30)) {
				error_at(ps, at, "bad storage size \"%s\": expected a size such as 64M (K, M or G, also written KB/KiB, MB/MiB, GB/GiB), at least 1M and at most 64G",
					 quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
			st->size = n;
		} else if ((KEY("moving-window-max") || KEY("concurrency-max")) &&
			   st->kind == RL_STORAGE_SHM) {
			if (parse_uint(v, vlen, 1000000, &n) || n == 0) {
				error_at(ps, at, "bad %.*s \"%s\": expected a count from 1 to 1000000",
					 (int)nlen, q, quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
			if (KEY("moving-window-max"))
				st->moving_max = n;
			else
				st->concurrency_max = n;
		} else if (KEY("names") && st->kind == RL_STORAGE_SHM) {
			if (vlen == 2 && memcmp(v, "on", 2) == 0)
				st->names = 1;
			else if (vlen == 3 && memcmp(v, "off", 3) == 0)
				st->names = 0;
			else {
				error_at(ps, at, "bad value \"%s\" for names: expected on or off",
					 quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
		} else if (KEY("db") && st->kind == RL_STORAGE_REDIS) {
			if (parse_uint(v, vlen, 65535, &n)) {
				error_at(ps, at, "bad redis db \"%s\": expected a number",
					 quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
			st->db = (unsigned)n;
		} else if ((KEY("timeout") || KEY("connect-timeout")) &&
			   st->kind == RL_STORAGE_REDIS) {
			if (parse_uint(v, vlen, 60000, &n) || n == 0) {
				error_at(ps, at, "bad redis %.*s \"%s\": expected milliseconds from 1 to 60000",
					 (int)nlen, q, quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
			if (KEY("timeout"))
				st->timeout_ms = (unsigned)n;
			else
				st->connect_timeout_ms = (unsigned)n;
		} else if (KEY("password") && st->kind == RL_STORAGE_REDIS) {
			st->password = rl_arena_strndup(ps->a, v, vlen);
		} else if (KEY("user") && st->kind == RL_STORAGE_REDIS) {
			st->user = rl_arena_strndup(ps->a, v, vlen);
		} else if (KEY("fallback") && st->kind == RL_STORAGE_REDIS) {
			if (vlen == 0 || v[0] != '/' || memchr(v, '\0', vlen) != NULL) {
				error_at(ps, at, "bad redis fallback \"%s\": expected the absolute path of a shared-memory store file",
					 quote(v, vlen, qb, sizeof(qb)));
				return -1;
			}
			st->fallback_path = rl_arena_strndup(ps->a, v, vlen);
		} else {
			error_at(ps, at, "unknown storage parameter \"%s\" for %s storage",
				 quote(q, nlen, qb, sizeof(qb)),
				 st->kind == RL_STORAGE_SHM ? "shm" : "redis");
			return -1;
		}
#undef KEY
		if (amp == NULL)
			break;
		len -= plen + 1;
		q = amp + 1;
	}
	return 0;
}

/* The last c in s[0..len): a redis URI's password may hold '@' (and '/'),
 * its host and db never do, so the userinfo ends at the last '@'. */
static const char *
last_of(const char *s, size_t len, char c)
{
	while (len > 0) {
		if (s[len - 1] == c)
			return s + len - 1;
		len--;
	}
	return NULL;
}

/* storage memory | shm:NAME[?size=64M] | shm:/path[?size=..] |
 * redis://[:password@]host[:port][/db][?timeout=MS&connect-timeout=MS] |
 * redis+unix:///path[?db=N&password=P&timeout=MS] */
/* s with the password of a redis URI ("redis://:PW@host", "redis://user:
 * PW@host", "...?password=PW") written as "***", into arena memory (NULL
 * out of memory): the storage line goes into -t's summary and the log. */
static const char *
storage_shown(struct pstate *ps, const char *s, size_t len)
{
	char *out = rl_arena_alloc(ps->a, 2 * len + 8);  /* each mask adds at most 4 */
	size_t o = 0, i = 0;
	const char *q = memchr(s, '?', len);
	size_t blen = q ? (size_t)(q - s) : len;

	if (out == NULL)
		return NULL;
	if (blen > 8 && memcmp(s, "redis://", 8) == 0) {
		const char *at = last_of(s + 8, blen - 8, '@');
		if (at != NULL) {
			const char *colon = memchr(s + 8, ':', (size_t)(at - (s + 8)));
			size_t keep = colon ? (size_t)(colon - s) : 8;
			memcpy(out, s, keep);
			o = keep;
			memcpy(out + o, ":***", 4);
			o += 4;
			i = (size_t)(at - s);
		}
	}
	while (i < len) {
		/* "password=" at the start of a query parameter */
		if ((s[i] == '?' || s[i] == '&') && len - i > 9 &&
		    memcmp(s + i + 1, "password=", 9) == 0) {
			memcpy(out + o, s + i, 10);
			o += 10;
			i += 10;
			while (i < len && s[i] != '&')
				i++;
			memcpy(out + o, "***", 3);
			o += 3;
			continue;
		}
		out[o++] = s[i++];
	}
	out[o] = '\0';
	return out;
}

static int
parse_storage(struct pstate *ps, const struct loc *at, const char *s,
	      size_t len, struct rl_storage *st)
{
	char qb[200];
	const char *q = memchr(s, '?', len);
	size_t blen = q ? (size_t)(q - s) : len;

	memset(st, 0, sizeof(*st));
	st->file = at->file;
	st->line = at->line;
	st->col = at->col;
	st->uri = rl_arena_strndup(ps->a, s, len);
	st->shown = storage_shown(ps, s, len);
	if (st->uri == NULL || st->shown == NULL) {
		ps->oom = 1;
		return -1;
	}
	st->connect_timeout_ms = 200;
	st->timeout_ms = 100;
	if ((blen == 6 && memcmp(s, "memory", 6) == 0) ||
	    (blen == 7 && memcmp(s, "memory:", 7) == 0)) {
		st->kind = RL_STORAGE_MEMORY;
		if (q) {
			error_at(ps, at, "memory storage takes no parameters");
			return -1;
		}
		return 0;
	}
	if (blen > 4 && memcmp(s, "shm:", 4) == 0) {
		const char *p = s + 4;
		size_t plen = blen - 4;

		st->kind = RL_STORAGE_SHM;
		st->size = 64u << 20;
		st->names = 1;
		if (p[0] == '/') {
			if (plen < 2 || p[plen - 1] == '/') {
				error_at(ps, at, "bad shm path \"%s\": expected a file path",
					 quote(p, plen, qb, sizeof(qb)));
				return -1;
			}
			st->path = rl_arena_strndup(ps->a, p, plen);
		} else {
			if (!name_ok(p, plen, "_.-")) {
				error_at(ps, at, "bad shm name \"%s\": expected letters, digits, '_', '.' or '-' (or an absolute path)",
					 quote(p, plen, qb, sizeof(qb)));
				return -1;
			}
			char buf[MAX_NAME + 16];
			snprintf(buf, sizeof(buf), "/dev/shm/%.*s", (int)plen, p);
			st->path = rl_arena_strndup(ps->a, buf, strlen(buf));
		}
		return q ? storage_query(ps, at, q + 1, len - blen - 1, st) : 0;
	}
	if (blen > 13 && memcmp(s, "redis+unix://", 13) == 0) {
		st->kind = RL_STORAGE_REDIS;
		if (s[13] != '/') {
			error_at(ps, at, "bad redis socket in \"%s\": expected redis+unix:///absolute/path",
				 quote(s, len, qb, sizeof(qb)));
			return -1;
		}
		st->path = rl_arena_strndup(ps->a, s + 13, blen - 13);
		return q ? storage_query(ps, at, q + 1, len - blen - 1, st) : 0;
	}
	if (blen > 8 && memcmp(s, "redis://", 8) == 0) {
		const char *p = s + 8, *end = s + blen;
		const char *atsign = last_of(p, (size_t)(end - p), '@');
		uint64_t n;

		st->kind = RL_STORAGE_REDIS;
		st->port = 6379;
		if (atsign) {
			/* [user]:password@, or password@ alone */
			const char *colon = memchr(p, ':', (size_t)(atsign - p));
			const char *pw = colon ? colon + 1 : p;
			st->password = rl_arena_strndup(ps->a, pw,
							(size_t)(atsign - pw));
			if (colon != NULL && colon > p)
				st->user = rl_arena_strndup(ps->a, p,
							    (size_t)(colon - p));
			p = atsign + 1;
		}
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *hend = slash ? slash : end;
		const char *colon = NULL;
		if (p < hend && p[0] == '[') {
			const char *rb = memchr(p, ']', (size_t)(hend - p));
			if (rb == NULL) {
				error_at(ps, at, "bad redis host in \"%s\": unclosed '['",
					 quote(s, len, qb, sizeof(qb)));
				return -1;
			}
			st->host = rl_arena_strndup(ps->a, p + 1, (size_t)(rb - p - 1));
			if (rb + 1 < hend && rb[1] == ':')
				colon = rb + 1;
		} else {
			colon = memchr(p, ':', (size_t)(hend - p));
			st->host = rl_arena_strndup(ps->a, p,
				(size_t)((colon ? colon : hend) - p));
		}
		if (st->host == NULL || st->host[0] == '\0') {
			error_at(ps, at, "bad redis URI \"%s\": expected redis://[:password@]host[:port][/db]",
				 quote(s, len, qb, sizeof(qb)));
			return -1;
		}
		if (colon) {
			if (parse_uint(colon + 1, (size_t)(hend - colon - 1), 65535, &n) || n == 0) {
				error_at(ps, at, "bad redis port in \"%s\": expected 1 to 65535",
					 quote(s, len, qb, sizeof(qb)));
				return -1;
			}
			st->port = (unsigned)n;
		}
		if (slash && slash + 1 < end) {
			if (parse_uint(slash + 1, (size_t)(end - slash - 1), 65535, &n)) {
				error_at(ps, at, "bad redis db in \"%s\": expected a number after '/'",
					 quote(s, len, qb, sizeof(qb)));
				return -1;
			}
			st->db = (unsigned)n;
		}
		return q ? storage_query(ps, at, q + 1, len - blen - 1, st) : 0;
	}
	error_at(ps, at, "unknown storage \"%s\": expected shm:NAME, shm:/path, memory, redis://host:port/db or redis+unix:///path",
		 quote(s, len, qb, sizeof(qb)));
	return -1;
}


/* A value's column in the line, at the place of its first byte (its
 * opening quote when quoted): the offset off into the value is a column
 * offset when the token was not quoted, one more when it is a simple
 * quoted word (tok.quoted); escapes shift the text, so such a value's
 * errors point at its start. */
static struct loc
value_loc(const struct loc *at, int quoted, size_t off)
{
	struct loc l = *at;

	if (!quoted)
		l.col += off;
	else if (quoted == QUOTED_SIMPLE)
		l.col += 1 + off;
	return l;
}

/* Two key parts that read the same thing (header names differing only in
 * case or '-'/'_' are one CGI variable). */
static int
same_part(const struct rl_key_part *a, const struct rl_key_part *b)
{
	if (a->src == RL_KEY_ADDR || b->src == RL_KEY_ADDR)
		return a->src == b->src;
	if (a->var != NULL && b->var != NULL &&
	    (a->src == RL_KEY_HEADER || a->src == RL_KEY_VAR) &&
	    (b->src == RL_KEY_HEADER || b->src == RL_KEY_VAR))
		return strcmp(a->var, b->var) == 0;
	return a->src == b->src && strcmp(a->name, b->name) == 0;
}

static int
same_alt(const struct rl_key_alt *a, const struct rl_key_alt *b)
{
	if (a->nparts != b->nparts)
		return 0;
	for (size_t i = 0; i < a->nparts; i++)
		if (!same_part(&a->parts[i], &b->parts[i]))
			return 0;
	return 1;
}

/* Key specs that mean less than they say: a part twice in one alternative,
 * an alternative twice, alternatives after a plain addr (an address is
 * always there, so they are never tried). */
static void
check_key(struct pstate *ps, const struct loc *at, const struct rl_key *k)
{
	for (size_t i = 0; i < k->nalts; i++) {
		const struct rl_key_alt *a = &k->alts[i];
		for (size_t p = 0; p < a->nparts; p++)
			for (size_t q = 0; q < p; q++)
				if (same_part(&a->parts[p], &a->parts[q])) {
					warn_at(ps, at, "key \"%s\": the same part twice in one alternative (counted once)",
						k->text);
					return;
				}
		for (size_t j = 0; j < i; j++)
			if (same_alt(a, &k->alts[j])) {
				warn_at(ps, at, "key \"%s\": an alternative is given twice (header names differing in case, '-' or '_' are one variable)",
					k->text);
				return;
			}
		if (i + 1 < k->nalts && a->nparts == 1 &&
		    a->parts[0].src == RL_KEY_ADDR) {
			warn_at(ps, at, "key \"%s\": the alternatives after addr are never used (a client address is always there)",
				k->text);
			return;
		}
	}
}

/* A deny message (the global or message=) at at: 1 to MAX_MESSAGE bytes
 * without control bytes; a control byte is reported where it is.  Returns
 * 1 when it is fine, 0 after reporting. */
static int
message_ok(struct pstate *ps, const struct loc *at, int quoted, const char *v,
	   size_t vlen, const char *hint)
{
	for (size_t i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x20 || c == 0x7f) {
			struct loc e = value_loc(at, quoted, i);
			error_at(ps, &e, "control byte 0x%02x%s in the message: expected printable text",
				 c, c == '\t' ? " (a tab)" : "");
			return 0;
		}
	}
	if (vlen == 0 || vlen > MAX_MESSAGE) {
		error_at(ps, at, "bad message: expected 1 to %d bytes of printable text%s",
			 MAX_MESSAGE, hint);
		return 0;
	}
	return 1;
}

/* upstream cgi:/path | fcgi://HOST:PORT | fcgi+unix:///path, into arena
 * memory.  at is the place of the value's first byte.  NULL after
 * reporting. */
static const struct rl_upstream *
parse_upstream(struct pstate *ps, const struct loc *at, const char *s,
	       size_t len, int quoted)
{
	char qb[200];
	struct rl_upstream *u = rl_arena_alloc(ps->a, sizeof(*u));
	struct loc e;

	if (u == NULL) {
		ps->oom = 1;
		return NULL;
	}
	u->uri = rl_arena_strndup(ps->a, s, len);
	u->file = at->file;
	u->line = at->line;
	u->col = at->col;
	if (len > 4 && memcmp(s, "cgi:", 4) == 0) {
		const char *p = s + 4;
		size_t plen = len - 4;

		u->kind = RL_UPSTREAM_CGI;
		if (p[0] != '/' || (plen > 1 && p[1] == '/') ||
		    p[plen - 1] == '/' || memchr(p, '?', plen) != NULL) {
			e = value_loc(at, quoted, 4);
			error_at(ps, &e, "bad CGI script \"%s\" in upstream: expected cgi:/absolute/path/to/script",
				 quote(p, plen, qb, sizeof(qb)));
			return NULL;
		}
		u->path = rl_arena_strndup(ps->a, p, plen);
		return u;
	}
	if (len >= 12 && memcmp(s, "fcgi+unix://", 12) == 0) {
		const char *p = s + 12;
		size_t plen = len - 12;

		u->kind = RL_UPSTREAM_FCGI_UNIX;
		e = value_loc(at, quoted, 12);
		if (plen < 2 || p[0] != '/' || p[plen - 1] == '/' ||
		    memchr(p, '?', plen) != NULL) {
			error_at(ps, &e, "bad socket \"%s\" in upstream: expected fcgi+unix:///absolute/path/to.sock",
				 quote(p, plen, qb, sizeof(qb)));
			return NULL;
		}
		if (plen > UNIX_PATH_MAX) {
			error_at(ps, &e, "socket path \"%s\" in upstream is longer than %d bytes (the most a unix socket address holds)",
				 quote(p, plen, qb, sizeof(qb)), UNIX_PATH_MAX);
			return NULL;
		}
		u->path = rl_arena_strndup(ps->a, p, plen);
		return u;
	}
	if (len >= 7 && memcmp(s, "fcgi://", 7) == 0) {
		const char *p = s + 7, *end = s + len, *hend, *colon;
		struct rl_addr a;
		uint64_t port;

		u->kind = RL_UPSTREAM_FCGI;
		if (p < end && p[0] == '[') {
			const char *rb = memchr(p, ']', (size_t)(end - p));
			if (rb == NULL || rl_addr_parse(p + 1, (size_t)(rb - p - 1), &a) ||
			    memchr(p + 1, ':', (size_t)(rb - p - 1)) == NULL) {
				e = value_loc(at, quoted, 7);
				error_at(ps, &e, "bad host \"%s\" in upstream: expected a numeric IPv4 address, [IPv6] or localhost",
					 quote(p, rb ? (size_t)(rb - p + 1) : (size_t)(end - p), qb, sizeof(qb)));
				return NULL;
			}
			u->host = rl_arena_strndup(ps->a, p + 1, (size_t)(rb - p - 1));
			hend = rb + 1;
		} else {
			colon = memchr(p, ':', (size_t)(end - p));
			hend = colon ? colon : end;
			size_t hlen = (size_t)(hend - p);
			int ok = (hlen == 9 && memcmp(p, "localhost", 9) == 0) ||
				 (hlen > 0 && rl_addr_parse(p, hlen, &a) == 0 &&
				  a.family == 4 && memchr(p, ' ', hlen) == NULL);
			if (!ok) {
				e = value_loc(at, quoted, 7);
				error_at(ps, &e, "bad host \"%s\" in upstream: expected a numeric IPv4 address, [IPv6] or localhost (names are not resolved)",
					 quote(p, hlen, qb, sizeof(qb)));
				return NULL;
			}
			u->host = rl_arena_strndup(ps->a, p, hlen);
		}
		if (hend >= end || hend[0] != ':') {
			e = value_loc(at, quoted, (size_t)(hend - s));
			error_at(ps, &e, "missing port in upstream \"%s\": expected fcgi://HOST:PORT",
				 quote(s, len, qb, sizeof(qb)));
			return NULL;
		}
		if (parse_uint(hend + 1, (size_t)(end - hend - 1), 65535, &port) ||
		    port == 0) {
			e = value_loc(at, quoted, (size_t)(hend + 1 - s));
			error_at(ps, &e, "bad port \"%s\" in upstream: expected 1 to 65535",
				 quote(hend + 1, (size_t)(end - hend - 1), qb, sizeof(qb)));
			return NULL;
		}
		u->port = (unsigned)port;
		return u;
	}
	error_at(ps, at, "unknown upstream \"%s\": expected cgi:/path/to/script, fcgi://HOST:PORT or fcgi+unix:///path/to.sock",
		 quote(s, len, qb, sizeof(qb)));
	return NULL;
}

/* "1500ms", "30s", "5m", "24h": the shortest exact spelling, for
 * messages. */
static void
fmt_ms(char *out, size_t cap, uint64_t ms)
{
	if (ms >= 3600000 && ms % 3600000 == 0)
		snprintf(out, cap, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms >= 60000 && ms % 60000 == 0)
		snprintf(out, cap, "%llum", (unsigned long long)(ms / 60000));
	else if (ms >= 1000 && ms % 1000 == 0)
		snprintf(out, cap, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(out, cap, "%llums", (unsigned long long)ms);
}

/* Networks, one per word, into arena memory; NULL after reporting.  what
 * completes "bad %s \"...\"". */
static struct rl_cidr *
parse_nets(struct pstate *ps, const struct loc *ln, const struct tok *args,
	   size_t nargs, const char *what, const char *example)
{
	char qb[200];

	if (nargs > MAX_NETS) {
		struct loc at = loc_of(ln, args[MAX_NETS].col);
		error_at(ps, &at, "too many %ss (more than %d)", what, MAX_NETS);
		return NULL;
	}
	struct rl_cidr *nets = rl_arena_alloc(ps->a, nargs * sizeof(*nets));
	if (nets == NULL) {
		ps->oom = 1;
		return NULL;
	}
	for (size_t i = 0; i < nargs; i++) {
		if (rl_cidr_parse(args[i].v, args[i].vlen, &nets[i])) {
			struct loc at = loc_of(ln, args[i].col);
			error_at(ps, &at, "bad %s \"%s\": expected an address or CIDR such as %s",
				 what, Q(&args[i], qb), example);
			return NULL;
		}
	}
	return nets;
}

/* exempt-clients 0.0.0.0/0 (or ::/0) exempts every client of that family:
 * say so, since "enabled off" is the way to mean it. */
static void
warn_everyone(struct pstate *ps, const struct loc *ln, const struct tok *args,
	      const struct rl_cidr *nets, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (nets[i].bits == 0) {
			struct loc at = loc_of(ln, args[i].col);
			warn_at(ps, &at, "exempt-clients %s exempts every IPv%d client: nothing is limited for them (to turn limiting off, write \"enabled off\")",
				nets[i].net.family == 4 ? "0.0.0.0/0" : "::/0",
				nets[i].net.family);
		}
	}
}

/* A URL path the gateway answers itself (stats): absolute and already in
 * normalised form, so that it is matched exactly as rules are. */
static int
urlpath_ok(const char *s, size_t len)
{
	char *buf;
	size_t n = 0;
	int ok;

	if (len == 0 || s[0] != '/' || len > 256 ||
	    memchr(s, '?', len) != NULL || memchr(s, '#', len) != NULL)
		return 0;
	buf = malloc(len + 1);
	if (buf == NULL)
		return 0;
	ok = rl_path_normalize(s, len, 0, buf, &n, &(struct rl_diag){ 0 }) == 0 &&
	     n == len && memcmp(buf, s, len) == 0;
	free(buf);
	return ok;
}

/* ------------------------------------------------------------------ */
/* Global directives: one table row per setting                        */

enum dtype {
	D_ONOFF, D_UINT, D_STRATEGY, D_RETRY, D_NAME, D_MESSAGE, D_LIMITS,
	D_KEY, D_STORAGE, D_PROXIES, D_PROXY_HEADER, D_TEXT, D_LISTEN, D_INCLUDE,
	D_SIZE, D_DURATION, D_CHOICE, D_UPSTREAM, D_URLPATH, D_CIDRS
};

struct directive {
	const char *name;
	enum dtype type;
	size_t off;             /* into struct rl_settings */
	size_t off2;            /* D_LIMITS, D_CIDRS: the count */
	uint64_t min, max;      /* D_UINT, D_SIZE (bytes), D_DURATION (ms) */
	const char *const *words; /* D_CHOICE: the values, in enum order */
};

static const char *const store_failure_words[] = { "deny", "allow", "fallback", NULL };
static const char *const log_format_words[] = { "logfmt", "json", NULL };

#define S(f) offsetof(struct rl_settings, f)
static const struct directive directives[] = {
	{ "enabled",          D_ONOFF,        S(enabled), 0, 0, 0, NULL },
	{ "dry-run",          D_ONOFF,        S(dry_run), 0, 0, 0, NULL },
	{ "headers",          D_ONOFF,        S(headers), 0, 0, 0, NULL },
	{ "ietf-headers",     D_ONOFF,        S(ietf_headers), 0, 0, 0, NULL },
	{ "case-insensitive", D_ONOFF,        S(case_insensitive), 0, 0, 0, NULL },
	{ "retry-after",      D_RETRY,        S(retry_after), 0, 0, 0, NULL },
	{ "strategy",         D_STRATEGY,     S(strategy), 0, 0, 0, NULL },
	{ "burst",            D_UINT,         S(burst), 0, 1, RL_MAX_COUNT, NULL },
	{ "ipv4-prefix",      D_UINT,         S(ipv4_prefix), 0, 1, 32, NULL },
	{ "ipv6-prefix",      D_UINT,         S(ipv6_prefix), 0, 1, 128, NULL },
	{ "key-prefix",       D_NAME,         S(key_prefix), 0, 0, 0, NULL },
	{ "key",              D_KEY,          S(key), 0, 0, 0, NULL },
	{ "message",          D_MESSAGE,      S(message), 0, 0, 0, NULL },
	{ "default",          D_LIMITS,       S(defaults), S(ndefaults), 0, 0, NULL },
	{ "application",      D_LIMITS,       S(application), S(napplication), 0, 0, NULL },
	{ "storage",          D_STORAGE,      S(storage), 0, 0, 0, NULL },
	{ "store-failure",    D_CHOICE,       S(store_failure), 0, 0, 0, store_failure_words },
	{ "trusted-proxies",  D_PROXIES,      S(proxies), 0, 0, 0, NULL },
	{ "proxy-header",     D_PROXY_HEADER, S(proxies), 0, 0, 0, NULL },
	{ "listen",           D_LISTEN,       S(listen), 0, 0, 0, NULL },
	{ "upstream",         D_UPSTREAM,     S(upstream), 0, 0, 0, NULL },
	{ "upstream-timeout", D_DURATION,     S(upstream_timeout_ms), 0, 1, 86400000, NULL },
	{ "upstream-keepalive", D_UINT,       S(upstream_keepalive), 0, 0, 64, NULL },
	{ "client-timeout",   D_DURATION,     S(client_timeout_ms), 0, 100, 86400000, NULL },
	{ "concurrency-lease", D_DURATION,    S(lease_ms), 0, 1000, 2 * 86400000LL, NULL },
	{ "max-body",         D_SIZE,         S(max_body), 0, 1, RL_SIZE_MAX, NULL },
	{ "log-format",       D_CHOICE,       S(log_format), 0, 0, 0, log_format_words },
	{ "stats",            D_URLPATH,      S(stats), 0, 0, 0, NULL },
	{ "stats-allow",      D_CIDRS,        S(stats_allow), S(nstats_allow), 0, 0, NULL },
	{ "exempt-clients",   D_CIDRS,        S(exempt_clients), S(nexempt_clients), 0, 0, NULL },
	{ "include",          D_INCLUDE,      0, 0, 0, 0, NULL },
};
#undef S
#define NDIRECTIVES (sizeof(directives) / sizeof(directives[0]))
_Static_assert(NDIRECTIVES <= MAX_DIRECTIVES, "pstate.seen holds every directive");

/* The table row of a directive, for the final pass's cross-checks. */
static size_t
directive_index(const char *name)
{
	for (size_t i = 0; i < NDIRECTIVES; i++)
		if (strcmp(directives[i].name, name) == 0)
			return i;
	return 0;       /* not reached: every caller names a row */
}

static void parse_text(struct pstate *ps, const char *file, const char *text,
		       size_t len);

static void include_files(struct pstate *ps, const struct loc *at,
			  const struct tok *arg);

static int
one_arg(struct pstate *ps, const struct loc *ln, const struct directive *d,
	const struct tok *args, size_t nargs)
{
	char qb[200];

	if (nargs == 1)
		return 0;
	if (nargs == 0) {
		struct loc at = *ln;
		error_at(ps, &at, "\"%s\" needs a value", d->name);
	} else {
		struct loc at = loc_of(ln, args[1].col);
		error_at(ps, &at, "unexpected \"%s\" after the value of \"%s\"%s",
			 Q(&args[1], qb), d->name,
			 d->type == D_MESSAGE ? ": quote a message with spaces" : "");
	}
	return -1;
}

static void
directive(struct pstate *ps, const struct loc *ln, const struct directive *d,
	  const struct tok *args, size_t nargs)
{
	struct rl_settings *st = &ps->rs->settings;
	char *field = (char *)st + d->off;
	char qb[200];
	size_t di = (size_t)(d - directives);

	if (d->type != D_INCLUDE) {
		if (ps->seen[di].line != 0) {
			error_at(ps, ln, "\"%s\" is set twice (first at %s:%u)",
				 d->name, ps->seen[di].file, ps->seen[di].line);
			return;
		}
		ps->seen[di] = *ln;
	}
	if (d->type != D_LIMITS && d->type != D_PROXIES && d->type != D_CIDRS &&
	    one_arg(ps, ln, d, args, nargs))
		return;
	const struct tok *a = &args[0];
	struct loc at = nargs ? loc_of(ln, a->col) : *ln;

	ps->value_at[di] = at;

	switch (d->type) {
	case D_ONOFF:
		if (tok_is(a, "on"))
			*(int *)field = 1;
		else if (tok_is(a, "off"))
			*(int *)field = 0;
		else
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected on or off",
				 Q(a, qb), d->name);
		break;
	case D_UINT: {
		uint64_t v;
		if (parse_uint(a->v, a->vlen, d->max, &v) || v < d->min)
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected a number from %llu to %llu",
				 Q(a, qb), d->name, (unsigned long long)d->min,
				 (unsigned long long)d->max);
		else if (d->max <= 128)
			*(unsigned *)field = (unsigned)v;
		else
			*(uint64_t *)field = v;
		break;
	}
	case D_STRATEGY:
		if (rl_strategy_from_name(a->v, a->vlen, (enum rl_strategy *)field))
			error_at(ps, &at, "unknown strategy \"%s\": expected fixed-window, fixed-window-elastic-expiry, moving-window, sliding-window-counter or gcra",
				 Q(a, qb));
		else
			ps->has_strategy = 1;
		break;
	case D_RETRY:
		if (tok_is(a, "seconds"))
			*(enum rl_retry_format *)field = RL_RETRY_SECONDS;
		else if (tok_is(a, "http-date"))
			*(enum rl_retry_format *)field = RL_RETRY_HTTP_DATE;
		else
			error_at(ps, &at, "bad value \"%s\" for \"retry-after\": expected seconds or http-date",
				 Q(a, qb));
		break;
	case D_NAME:
		if (!name_ok(a->v, a->vlen, "_.-"))
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected up to %d letters, digits, '_', '.' or '-'",
				 Q(a, qb), d->name, MAX_NAME);
		else
			*(const char **)field = rl_arena_strndup(ps->a, a->v, a->vlen);
		break;
	case D_TEXT:
		*(const char **)field = rl_arena_strndup(ps->a, a->v, a->vlen);
		break;
	case D_LISTEN: {
		/* a socket path, or HOST:PORT whose port is checked here (the
		 * gateway checks the host when it starts: numeric only) */
		const char *colon = NULL;
		for (size_t i = a->vlen; i-- > 0;)
			if (a->v[i] == ':') {
				colon = a->v + i;
				break;
			}
		size_t pl = colon ? a->vlen - (size_t)(colon + 1 - a->v) : 0;
		int path = a->vlen > 0 && (a->v[0] == '/' ||
			   (a->vlen > 5 && memcmp(a->v, "unix:", 5) == 0));
		if (!path && (colon == NULL || colon == a->v)) {
			error_at(ps, &at, "bad value \"%s\" for \"listen\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000)",
				 Q(a, qb));
			break;
		}
		uint64_t port;
		if (!path) {
			/* the host: a numeric address, as the gateway binds
			 * it (-t must not pass what a start refuses) */
			const char *h = a->v;
			size_t hl = (size_t)(colon - a->v);
			struct rl_cidr c;
			int bracketed = hl >= 2 && h[0] == '[' && h[hl - 1] == ']';
			if (bracketed) {
				h++;
				hl -= 2;
			}
			if (memchr(h, '/', hl) != NULL ||
			    (!bracketed && memchr(h, ':', hl) != NULL) ||
			    rl_cidr_parse(h, hl, &c) != 0) {
				error_at(ps, &at, "bad value \"%s\" for \"listen\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000), not a host name",
					 Q(a, qb));
				break;
			}
			if (parse_uint(colon + 1, pl, 65535, &port) || port == 0) {
				struct loc e = at;
				if (!a->quoted)
					e.col += (size_t)(colon + 1 - a->v);
				error_at(ps, &e, "bad port \"%.*s\" in listen: expected 1 to 65535",
					 (int)(pl > 20 ? 20 : pl), colon + 1);
				break;
			}
		}
		*(const char **)field = rl_arena_strndup(ps->a, a->v, a->vlen);
		break;
	}
	case D_MESSAGE:
		if (message_ok(ps, &at, a->quoted, a->v, a->vlen, ""))
			*(const char **)field = rl_arena_strndup(ps->a, a->v, a->vlen);
		break;
	case D_LIMITS: {
		const char *s;
		size_t len, n = 0;
		if (nargs == 0) {
			error_at(ps, ln, "\"%s\" needs limits, e.g. \"%s 100/hour\"",
				 d->name, d->name);
			break;
		}
		size_t col;
		limit_words(args, nargs, &s, &len, &col);
		struct rl_limit *l = limits_at(ps, ln, s, len, col, &n);
		if (l) {
			*(struct rl_limit **)field = l;
			*(size_t *)((char *)st + d->off2) = n;
			if (field == (char *)&st->defaults)
				ps->defaults_at = at;
			else
				ps->application_at = at;
		}
		break;
	}
	case D_KEY: {
		struct rl_diag dg;
		struct rl_key *k = rl_key_compile(ps->a, a->v, a->vlen, &dg);
		if (k == NULL) {
			struct loc e = value_loc(&at, a->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
		} else {
			check_key(ps, &at, k);
			*(const struct rl_key **)field = k;
		}
		break;
	}
	case D_STORAGE:
		parse_storage(ps, &at, a->v, a->vlen, &st->storage);
		break;
	case D_SIZE: {
		struct rl_diag dg;
		uint64_t v;
		if (tok_is(a, "none") || tok_is(a, "off")) {
			*(uint64_t *)field = 0;
		} else if (rl_size_parse(a->v, a->vlen, &v, &dg)) {
			struct loc e = value_loc(&at, a->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
		} else if (v < d->min || v > d->max) {
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected at least %llu byte%s (or none for no limit)",
				 Q(a, qb), d->name, (unsigned long long)d->min,
				 d->min == 1 ? "" : "s");
		} else {
			*(uint64_t *)field = v;
		}
		break;
	}
	case D_DURATION: {
		struct rl_diag dg;
		int64_t v;
		if (rl_duration_parse(a->v, a->vlen, &v, &dg)) {
			struct loc e = value_loc(&at, a->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
		} else if ((uint64_t)v < d->min || (uint64_t)v > d->max) {
			char lo[32], hi[32];
			fmt_ms(lo, sizeof(lo), d->min);
			fmt_ms(hi, sizeof(hi), d->max);
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected a duration from %s to %s",
				 Q(a, qb), d->name, lo, hi);
		} else {
			*(int64_t *)field = v;
		}
		break;
	}
	case D_CHOICE: {
		size_t i;
		for (i = 0; d->words[i] != NULL; i++)
			if (tok_is(a, d->words[i]))
				break;
		if (d->words[i] != NULL) {
			*(int *)field = (int)i;
			break;
		}
		char list[128];
		size_t pos = 0;
		for (i = 0; d->words[i] != NULL && pos < sizeof(list); i++)
			pos += (size_t)snprintf(list + pos, sizeof(list) - pos, "%s%s",
						i == 0 ? "" : d->words[i + 1] ? ", " : " or ",
						d->words[i]);
		error_at(ps, &at, "bad value \"%s\" for \"%s\": expected %s",
			 Q(a, qb), d->name, list);
		break;
	}
	case D_UPSTREAM:
		*(const struct rl_upstream **)field =
			parse_upstream(ps, &at, a->v, a->vlen, a->quoted);
		break;
	case D_URLPATH:
		if (tok_is(a, "off"))
			*(const char **)field = NULL;
		else if (!urlpath_ok(a->v, a->vlen))
			error_at(ps, &at, "bad value \"%s\" for \"%s\": expected a URL path in normalised form such as /rategate/stats (or off)",
				 Q(a, qb), d->name);
		else
			*(const char **)field = rl_arena_strndup(ps->a, a->v, a->vlen);
		break;
	case D_CIDRS: {
		if (nargs == 0) {
			error_at(ps, ln, "\"%s\" needs networks, e.g. \"%s 127.0.0.1 ::1 10.0.0.0/8\"",
				 d->name, d->name);
			break;
		}
		char what[48];
		snprintf(what, sizeof(what), "%s network", d->name);
		struct rl_cidr *nets = parse_nets(ps, ln, args, nargs, what,
						  "127.0.0.1, 10.0.0.0/8 or ::1");
		if (nets && strcmp(d->name, "exempt-clients") == 0)
			warn_everyone(ps, ln, args, nets, nargs);
		if (nets) {
			*(const struct rl_cidr **)field = nets;
			*(size_t *)((char *)st + d->off2) = nargs;
		}
		break;
	}
	case D_PROXIES: {
		uint64_t n;
		if (nargs == 0) {
			error_at(ps, ln, "\"trusted-proxies\" needs a hop count or proxy networks, e.g. \"trusted-proxies 1\" or \"trusted-proxies 10.0.0.0/8\"");
			break;
		}
		if (nargs == 1 && isdigit((unsigned char)a->s[0]) &&
		    memchr(a->s, '.', a->len) == NULL &&
		    memchr(a->s, ':', a->len) == NULL) {
			if (parse_uint(a->v, a->vlen, 16, &n))
				error_at(ps, &at, "bad hop count \"%s\": expected 0 to 16",
					 Q(a, qb));
			else
				st->proxies.hops = (unsigned)n;
			break;
		}
		struct rl_cidr *nets = parse_nets(ps, ln, args, nargs,
						  "proxy network",
						  "10.0.0.0/8 or 2001:db8::/32 (or one hop count)");
		if (nets) {
			st->proxies.nets = nets;
			st->proxies.nnets = nargs;
		}
		break;
	}
	case D_PROXY_HEADER:
		if (a->vlen == 15 && strncasecmp(a->v, "x-forwarded-for", 15) == 0)
			st->proxies.forwarded = 0;
		else if (a->vlen == 9 && strncasecmp(a->v, "forwarded", 9) == 0)
			st->proxies.forwarded = 1;
		else
			error_at(ps, &at, "bad value \"%s\" for \"proxy-header\": expected X-Forwarded-For or Forwarded",
				 Q(a, qb));
		break;
	case D_INCLUDE:
		include_files(ps, &at, a);
		break;
	}
}

/* ------------------------------------------------------------------ */
/* Path rules                                                          */

enum otype { O_FLAG, O_DEFAULTS, O_METHODS, O_SCOPE, O_KEY, O_STRATEGY,
	     O_BURST, O_COST, O_MESSAGE, O_MISSING, O_CONCURRENCY, O_MAX_BODY,
	     O_BANDWIDTH, O_DEDUCT, O_UPSTREAM };

struct option {
	const char *name;
	enum otype type;
	size_t off;             /* into struct rl_rule (O_FLAG: the int) */
};

#define R(f) offsetof(struct rl_rule, f)
static const struct option options[] = {
	{ "exempt",      O_FLAG,     R(exempt) },
	{ "dry-run",     O_FLAG,     R(dry_run) },
	{ "per-method",  O_FLAG,     R(per_method) },
	{ "defaults",    O_DEFAULTS, R(defaults_add) },
	{ "methods",     O_METHODS,  R(methods) },
	{ "scope",       O_SCOPE,    R(scope) },
	{ "key",         O_KEY,      R(key) },
	{ "strategy",    O_STRATEGY, R(strategy) },
	{ "burst",       O_BURST,    R(burst) },
	{ "cost",        O_COST,     R(cost) },
	{ "message",     O_MESSAGE,  R(message) },
	{ "missing-key", O_MISSING,  R(missing) },
	{ "concurrency", O_CONCURRENCY, R(concurrency) },
	{ "max-body",    O_MAX_BODY, R(max_body) },
	{ "bandwidth",   O_BANDWIDTH, R(bandwidth) },
	{ "deduct-when", O_DEDUCT,   R(deduct) },
	{ "upstream",    O_UPSTREAM, R(upstream) },
};
#undef R
#define NOPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(NOPTIONS <= 64, "options seen are a 64-bit set");

/* The bit of an option in the set of options a rule has seen. */
static uint64_t
option_bit(const char *name)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strcmp(options[i].name, name) == 0)
			return 1ULL << i;
	return 0;
}

/* deduct-when=401,403 | 4xx | 401-403, joined by ',': statuses 100..599
 * into the rule's bitmap.  Returns 0, or -1 after reporting. */
static int
parse_deduct(struct pstate *ps, const struct loc *ln, size_t vcol,
	     int quoted, const char *v, size_t vlen, struct rl_rule *r)
{
	char qb[200];
	size_t i = 0;
	struct loc vat = loc_of(ln, vcol);

	while (i <= vlen) {
		size_t j = i, dash;
		uint64_t lo, hi;

		while (j < vlen && v[j] != ',')
			j++;
		const char *it = v + i;
		size_t n = j - i;
		struct loc at = value_loc(&vat, quoted, i);

		dash = 0;
		while (dash < n && it[dash] != '-')
			dash++;
		if (n == 3 && it[0] >= '1' && it[0] <= '5' &&
		    (it[1] == 'x' || it[1] == 'X') && (it[2] == 'x' || it[2] == 'X')) {
			lo = (uint64_t)(it[0] - '0') * 100;
			hi = lo + 99;
		} else if (dash < n) {
			if (parse_uint(it, dash, 999, &lo) ||
			    parse_uint(it + dash + 1, n - dash - 1, 999, &hi) ||
			    lo < 100 || hi > 599) {
				error_at(ps, &at, "bad status range \"%s\" in deduct-when=: expected two statuses from 100 to 599 such as 401-403",
					 quote(it, n, qb, sizeof(qb)));
				return -1;
			}
			if (lo > hi) {
				error_at(ps, &at, "bad status range \"%s\" in deduct-when=: the first status is above the last",
					 quote(it, n, qb, sizeof(qb)));
				return -1;
			}
		} else if (parse_uint(it, n, 999, &lo) || lo < 100 || lo > 599) {
			error_at(ps, &at, "bad status \"%s\" in deduct-when=: expected a status from 100 to 599, a class such as 4xx or a range such as 401-403, separated by ','",
				 quote(it, n, qb, sizeof(qb)));
			return -1;
		} else {
			hi = lo;
		}
		for (uint64_t st = lo; st <= hi; st++)
			r->deduct_status[(st - 100) / 64] |= 1ULL << ((st - 100) % 64);
		i = j + 1;
	}
	r->deduct = 1;
	return 0;
}

static const struct option *
find_option(const struct tok *t, size_t *namelen)
{
	const char *eq = memchr(t->s, '=', t->len);
	size_t n = t->len;

	/* name=value, where the name part is never quoted */
	if (eq != NULL && memchr(t->s, '"', (size_t)(eq - t->s)) == NULL)
		n = (size_t)(eq - t->s);
	*namelen = n;
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strlen(options[i].name) == n &&
		    memcmp(options[i].name, t->s, n) == 0)
			return &options[i];
	return NULL;
}

/* Is this word an option (name=value or a flag word)?  Limits never contain
 * '=' and never spell a flag. */
static int
is_option(const struct tok *t)
{
	size_t n;
	const struct option *o = find_option(t, &n);

	if (memchr(t->s, '=', t->len) != NULL)
		return 1;
	return o != NULL && o->type == O_FLAG;
}

static void
rule_option(struct pstate *ps, const struct loc *ln, struct prule *pr,
	    const struct tok *t, uint64_t *seen)
{
	char qb[200];
	size_t nlen;
	const struct option *o = find_option(t, &nlen);
	struct loc at = loc_of(ln, t->col);
	struct rl_rule *r = &pr->r;

	if (o == NULL) {
		error_at(ps, &at, "unknown rule option \"%s\": expected exempt, dry-run, per-method, defaults=, methods=, scope=, key=, strategy=, burst=, cost=, message=, missing-key=, concurrency=, max-body=, bandwidth=, deduct-when= or upstream=",
			 quote(t->s, nlen, qb, sizeof(qb)));
		return;
	}
	uint64_t bit = 1ULL << (o - options);
	if (*seen & bit) {
		error_at(ps, &at, "option \"%s\" given twice", o->name);
		return;
	}
	*seen |= bit;
	if (o->type == O_FLAG) {
		if (nlen != t->len) {
			error_at(ps, &at, "option \"%s\" takes no value", o->name);
			return;
		}
		*(int *)((char *)r + o->off) = 1;
		return;
	}
	if (nlen == t->len) {
		error_at(ps, &at, "option \"%s\" needs a value: %s=...", o->name,
			 o->name);
		return;
	}
	/* The value: raw after '=', or the unquoted value for quoted words. */
	const char *v = t->s + nlen + 1;
	size_t vlen = t->len - nlen - 1;
	size_t vcol = t->col + nlen + 1;
	if (t->quoted) {
		v = t->v + nlen + 1;
		vlen = t->vlen - nlen - 1;
	}
	struct loc vat = loc_of(ln, vcol);
	uint64_t n;

	switch (o->type) {
	case O_FLAG:
		break;
	case O_DEFAULTS:
		if (vlen == 3 && memcmp(v, "add", 3) == 0)
			r->defaults_add = 1;
		else if (vlen == 7 && memcmp(v, "replace", 7) == 0)
			r->defaults_add = 0;
		else
			error_at(ps, &vat, "bad value \"%s\" for defaults=: expected add or replace",
				 quote(v, vlen, qb, sizeof(qb)));
		break;
	case O_METHODS: {
		size_t i = 0;
		while (i <= vlen) {
			size_t j = i;
			while (j < vlen && v[j] != ',')
				j++;
			unsigned b = rl_method_bit(v + i, j - i);
			if (b == RL_METHOD_OTHER) {
				struct loc mat = value_loc(&vat, t->quoted, i);
				error_at(ps, &mat, "unknown method \"%s\" in methods=: expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT or TRACE, separated by ','",
					 quote(v + i, j - i, qb, sizeof(qb)));
				return;
			}
			/* GET admits HEAD: servers answer HEAD by running
			 * GET's handler, so HEAD must not escape the rule */
			r->methods |= b == RL_METHOD_GET ? b | RL_METHOD_HEAD : b;
			i = j + 1;
		}
		break;
	}
	case O_SCOPE:
		if (!name_ok(v, vlen, "_.-"))
			error_at(ps, &vat, "bad scope \"%s\": expected up to %d letters, digits, '_', '.' or '-'",
				 quote(v, vlen, qb, sizeof(qb)), MAX_NAME);
		else
			r->scope = rl_arena_strndup(ps->a, v, vlen);
		break;
	case O_KEY: {
		struct rl_diag dg;
		r->key = rl_key_compile(ps->a, v, vlen, &dg);
		if (r->key == NULL) {
			struct loc e = value_loc(&vat, t->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
		} else {
			check_key(ps, &vat, r->key);
		}
		break;
	}
	case O_STRATEGY:
		if (rl_strategy_from_name(v, vlen, &r->strategy))
			error_at(ps, &vat, "unknown strategy \"%s\": expected fixed-window, fixed-window-elastic-expiry, moving-window, sliding-window-counter or gcra",
				 quote(v, vlen, qb, sizeof(qb)));
		pr->has_strategy = 1;
		pr->strategy_at = vat;
		break;
	case O_BURST:
	case O_COST:
		if (parse_uint(v, vlen, RL_MAX_COUNT, &n) || n == 0) {
			error_at(ps, &vat, "bad value \"%s\" for %s=: expected a number from 1 to %llu",
				 quote(v, vlen, qb, sizeof(qb)), o->name,
				 (unsigned long long)RL_MAX_COUNT);
		} else if (o->type == O_BURST) {
			r->burst = n;
			pr->has_burst = 1;
			pr->burst_at = vat;
		} else {
			r->cost = n;
			pr->has_cost = 1;
			pr->cost_at = vat;
		}
		break;
	case O_MESSAGE: {
		if (message_ok(ps, &vat, t->quoted, v, vlen,
			       " (quote it: message=\"...\")"))
			r->message = rl_arena_strndup(ps->a, v, vlen);
		break;
	}
	case O_CONCURRENCY:
		if (parse_uint(v, vlen, RL_INFLIGHT_MAX, &n) || n == 0)
			error_at(ps, &vat, "bad value \"%s\" for concurrency=: expected a number from 1 to %d",
				 quote(v, vlen, qb, sizeof(qb)), RL_INFLIGHT_MAX);
		else
			r->concurrency = n;
		break;
	case O_MAX_BODY: {
		struct rl_diag dg;
		pr->has_max_body = 1;
		if ((vlen == 4 && memcmp(v, "none", 4) == 0) ||
		    (vlen == 3 && memcmp(v, "off", 3) == 0)) {
			r->max_body = 0;
		} else if (rl_size_parse(v, vlen, &n, &dg)) {
			struct loc e = value_loc(&vat, t->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
		} else if (n == 0) {
			error_at(ps, &vat, "bad value \"%s\" for max-body=: expected at least 1 byte (or none to lift the global max-body)",
				 quote(v, vlen, qb, sizeof(qb)));
		} else {
			r->max_body = n;
		}
		break;
	}
	case O_BANDWIDTH: {
		struct rl_limit tmp[RL_MAX_LIMITS];
		struct rl_diag dg;
		size_t nb = 0;
		pr->bandwidth_at = vat;
		if (rl_bandwidth_parse(v, vlen, tmp, &nb, &dg)) {
			struct loc e = value_loc(&vat, t->quoted, dg.col);
			error_at(ps, &e, "%s", dg.msg);
			break;
		}
		r->bandwidth = rl_arena_alloc(ps->a, nb * sizeof(*r->bandwidth));
		if (r->bandwidth == NULL) {
			ps->oom = 1;
			break;
		}
		memcpy(r->bandwidth, tmp, nb * sizeof(*r->bandwidth));
		r->nbandwidth = nb;
		break;
	}
	case O_DEDUCT:
		pr->deduct_at = vat;
		parse_deduct(ps, ln, vcol, t->quoted, v, vlen, r);
		break;
	case O_UPSTREAM:
		r->upstream = parse_upstream(ps, &vat, v, vlen, t->quoted);
		break;
	case O_MISSING:
		if (vlen == 4 && memcmp(v, "addr", 4) == 0)
			r->missing = RL_MISSING_ADDR;
		else if (vlen == 4 && memcmp(v, "deny", 4) == 0)
			r->missing = RL_MISSING_DENY;
		else
			error_at(ps, &vat, "bad value \"%s\" for missing-key=: expected addr or deny",
				 quote(v, vlen, qb, sizeof(qb)));
		break;
	}
}

static void
path_rule(struct pstate *ps, const struct loc *ln, const struct tok *toks,
	  size_t n)
{
	char qb[200];
	struct prule *pr = rl_arena_alloc(ps->a, sizeof(*pr));
	size_t i = 1, nerr = ps->rep->nerrors;
	uint64_t seen = 0;

	if (pr == NULL) {
		ps->oom = 1;
		return;
	}
	pr->where = loc_of(ln, toks[0].col);
	/* the line goes away with the file buffer: keep a copy */
	pr->pat = rl_arena_strndup(ps->a, toks[0].v, toks[0].vlen);
	pr->pat_len = toks[0].vlen;
	if (pr->pat == NULL) {
		ps->oom = 1;
		return;
	}
	pr->r.file = ln->file;
	pr->r.line = ln->line;
	pr->r.cost = 1;

	/* Limits: the words up to the first option. */
	while (i < n && !is_option(&toks[i]))
		i++;
	size_t nlimitwords = i - 1;
	if (i > 1) {
		const char *s;
		size_t len, col;
		limit_words(toks + 1, i - 1, &s, &len, &col);
		pr->limits_at = loc_of(ln, toks[1].col);
		pr->r.limits = limits_at(ps, ln, s, len, col, &pr->r.nlimits);
	}
	for (; i < n; i++) {
		if (!is_option(&toks[i])) {
			struct loc at = loc_of(ln, toks[i].col);
			size_t pn;
			const struct option *po = i > 1 &&
				memchr(toks[i - 1].s, '=', toks[i - 1].len) ?
				find_option(&toks[i - 1], &pn) : NULL;
			if (po != NULL) {
				/* message=Slow down: the value's second word */
				char qv[200];
				const char *v = toks[i - 1].s + pn + 1;
				size_t vl = toks[i - 1].len - pn - 1;
				error_at(ps, &at, "unexpected \"%s\" among the options: a value with spaces needs quotes (%s=\"%s %s\")",
					 Q(&toks[i], qb), po->name,
					 quote(v, vl, qv, sizeof(qv)), Q(&toks[i], qb));
			} else
				error_at(ps, &at, "unexpected \"%s\" among the options: limits come right after the path, options (name=value or a flag) after them",
					 Q(&toks[i], qb));
			return;
		}
		rule_option(ps, ln, pr, &toks[i], &seen);
	}
	if (ps->rep->nerrors != nerr)
		return;
	if (pr->r.exempt && pr->r.nlimits > 0) {
		error_at(ps, &pr->limits_at, "an exempt rule has no limits: remove the limits or \"exempt\"");
		return;
	}
	if (!pr->r.exempt && pr->r.nlimits == 0 && n == 1) {
		struct loc at = loc_of(ln, toks[0].col + toks[0].len);
		error_at(ps, &at, "rule for \"%s\" needs limits (e.g. 10/minute), concurrency=, bandwidth= or \"exempt\"",
			 Q(&toks[0], qb));
		return;
	}
	/* A rule of only max-body= and upstream= sets those for its paths
	 * and leaves the rate limits to the next matching rule, or to the
	 * defaults (rl_ruleset_match). */
	uint64_t path_only = option_bit("max-body") | option_bit("upstream") |
			     option_bit("methods") | option_bit("defaults");
	int settings_only = !pr->r.exempt && nlimitwords == 0 &&
			    pr->r.concurrency == 0 && pr->r.nbandwidth == 0 &&
			    (seen & (option_bit("max-body") | option_bit("upstream"))) != 0 &&
			    (seen & ~path_only) == 0;
	if (settings_only) {
		if ((seen & option_bit("defaults")) && !pr->r.defaults_add) {
			error_at(ps, &pr->where, "rule for \"%s\" has no limits of its own, so the next matching rule's limits (or the defaults) apply: remove defaults=replace (or use exempt for no limits)",
				 Q(&toks[0], qb));
			return;
		}
		pr->r.settings_only = 1;
	} else if (!pr->r.exempt && nlimitwords == 0 && pr->r.concurrency == 0 &&
		   pr->r.nbandwidth == 0) {
		/* a settings rule (max-body=, upstream=) with an option that
		 * needs limits: say which, where */
		if ((seen & (option_bit("max-body") | option_bit("upstream"))) != 0) {
			for (size_t k = 1; k < n; k++) {
				size_t kn;
				const struct option *o = find_option(&toks[k], &kn);
				if (o == NULL || (option_bit(o->name) & path_only) != 0)
					continue;
				struct loc at = loc_of(ln, toks[k].col);
				error_at(ps, &at, "%s%s needs limits on the rule: a rule with only max-body= or upstream= (a settings rule) may also have methods= and defaults=add, nothing else",
					 o->name, o->type == O_FLAG ? "" : "=");
				return;
			}
		}
		error_at(ps, &pr->where, "rule for \"%s\" has options but no limits: limits come right after the path",
			 Q(&toks[0], qb));
		return;
	}
	if (!pr->r.exempt && pr->r.deduct && pr->r.nlimits == 0) {
		error_at(ps, &pr->deduct_at, "deduct-when= needs request limits on the rule (it says when they are counted)");
		return;
	}
	uint64_t exempt_ok = option_bit("exempt") | option_bit("methods") |
			     option_bit("max-body") | option_bit("upstream");
	if (pr->r.exempt && (seen & ~exempt_ok) != 0)
		warn_at(ps, &pr->where, "options other than methods=, max-body= and upstream= have no effect on an exempt rule");
	if (ps->nrules == ps->caprules) {
		size_t cap = ps->caprules ? ps->caprules * 2 : 32;
		struct prule **nr = realloc(ps->rules, cap * sizeof(*nr));
		if (nr == NULL) {
			ps->oom = 1;
			return;
		}
		ps->rules = nr;
		ps->caprules = cap;
	}
	pr->r.index = (unsigned)ps->nrules;
	ps->rules[ps->nrules++] = pr;
}

/* ------------------------------------------------------------------ */
/* Lines and files                                                     */

static void
parse_line(struct pstate *ps, const struct loc *ln, const char *s, size_t len)
{
	struct tok toks[MAX_TOKENS];
	char qb[200];

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			struct loc at = loc_of(ln, i);
			if (c == 0)
				error_at(ps, &at, "NUL byte in a rule file");
			else
				error_at(ps, &at, "control byte 0x%02x in a rule file: expected text", c);
			return;
		}
	}
	int n = tokenize(ps, ln, s, len, toks);
	if (n <= 0)
		return;
	if (toks[0].s[0] == '/' && !toks[0].quoted) {
		path_rule(ps, ln, toks, (size_t)n);
		return;
	}
	for (size_t i = 0; i < NDIRECTIVES; i++) {
		if (tok_is(&toks[0], directives[i].name)) {
			struct loc at = loc_of(ln, toks[0].col);
			directive(ps, &at, &directives[i], toks + 1, (size_t)n - 1);
			return;
		}
	}
	struct loc at = loc_of(ln, toks[0].col);
	error_at(ps, &at, "unknown directive \"%s\": expected a path rule starting with '/' or one of strategy, default, application, trusted-proxies, headers, include, ... (see rategate.rules(5))",
		 Q(&toks[0], qb));
}

static void
parse_text(struct pstate *ps, const char *file, const char *text, size_t len)
{
	struct loc ln = { file, 0, 0 };
	size_t pos = 0;

	if (len > RL_FILE_SIZE_MAX) {
		ln.line = 1;
		error_at(ps, &ln, "file too large (%zu bytes, at most %u)", len,
			 RL_FILE_SIZE_MAX);
		return;
	}
	/* Editors do not count a byte order mark as a column: skipped, so
	 * line 1's columns are the editor's. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
		struct loc at = { file, 1, 0 };
		warn_at(ps, &at, "the file starts with a UTF-8 byte order mark: ignored (save the file without one)");
		pos = 3;
	}
	while (pos < len && !ps->oom) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		size_t l = end - pos;

		ln.line++;
		if (l > 0 && text[pos + l - 1] == '\r')
			l--;
		if (l > RL_LINE_MAX) {
			struct loc at = loc_of(&ln, RL_LINE_MAX);
			error_at(ps, &at, "line too long (%zu bytes, at most %d)",
				 l, RL_LINE_MAX);
		} else {
			parse_line(ps, &ln, text + pos, l);
		}
		pos = end + 1;
	}
}

static int
cmp_path(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
has_glob_chars(const char *s, size_t len)
{
	return memchr(s, '*', len) != NULL || memchr(s, '?', len) != NULL ||
	       memchr(s, '[', len) != NULL;
}

/* The identity of a file (the rl_io callback's, else its name): what
 * cycles and repeated includes are found by. */
static void
file_id(struct pstate *ps, const char *path, char *id, size_t cap)
{
	if (ps->io->identity == NULL ||
	    ps->io->identity(ps->io->ctx, path, id, cap) != 0)
		snprintf(id, cap, "%s", path);
}

/* Read path, included from from.  A file being read (the include stack)
 * is a cycle; but a glob's match (glob) that is one of them is skipped:
 * "include *.rules" in site.rules means the other files. */
static void
parse_file(struct pstate *ps, const struct loc *from, const char *path,
	   int glob)
{
	char msg[200], id[512];
	char *data = NULL;
	size_t len = 0;

	file_id(ps, path, id, sizeof(id));
	int cycle = 0;
	for (int i = 0; i < ps->depth && !cycle; i++)
		cycle = strcmp(ps->stack[i], id) == 0;
	if (cycle && glob)
		return;
	if (ps->depth >= RL_INCLUDE_DEPTH_MAX) {
		error_at(ps, from, "includes nested deeper than %d: \"%s\" not read",
			 RL_INCLUDE_DEPTH_MAX, path);
		return;
	}
	if (cycle) {
		error_at(ps, from, "include cycle: \"%s\" is already being read",
			 path);
		return;
	}
	/* Read once: a second include of a file (two overlapping globs)
	 * would only set its globals twice and shadow its own rules. */
	for (size_t i = 0; i < ps->nread; i++) {
		if (strcmp(ps->read[i].id, id) != 0)
			continue;
		if (ps->read[i].from.line == 0)
			warn_at(ps, from, "\"%s\" is the top rule file: not read again", path);
		else
			warn_at(ps, from, "\"%s\" was already included (at %s:%u): not read again",
				path, ps->read[i].from.file, ps->read[i].from.line);
		return;
	}
	msg[0] = '\0';
	if (ps->io->read_file(ps->io->ctx, path, &data, &len, msg, sizeof(msg))) {
		if (from->line == 0) {
			struct loc at = { path, 1, 0 };
			error_at(ps, &at, "cannot read rule file: %s", msg);
		} else {
			error_at(ps, from, "cannot read included file \"%s\": %s",
				 path, msg);
		}
		return;
	}
	/* An included file of 0 bytes is what an editor or a deploy that
	 * truncates, then writes, leaves for a moment; loading it would
	 * silently lift its limits (a review found a reload doing so).  An
	 * include meant to be empty says so with a comment. */
	if (len == 0 && from->line != 0) {
		error_at(ps, from, "included file \"%s\" is empty (still being written?): loading it would lift its limits; put a comment in it to keep it empty on purpose",
			 path);
		free(data);
		return;
	}
	const char *file = rl_arena_strndup(ps->a, path, strlen(path));
	struct read_file *nr = realloc(ps->read, (ps->nread + 1) * sizeof(*nr));
	if (nr != NULL) {
		ps->read = nr;
		nr[ps->nread].id = rl_arena_strndup(ps->a, id, strlen(id));
		nr[ps->nread].from = *from;
		if (nr[ps->nread].id != NULL)
			ps->nread++;
	}
	ps->stack[ps->depth] = strdup(id);
	if (file == NULL || nr == NULL || ps->stack[ps->depth] == NULL) {
		ps->oom = 1;
		free(ps->stack[ps->depth]);
		free(data);
		return;
	}
	ps->depth++;
	ps->rs->nfiles++;
	parse_text(ps, file, data, len);
	ps->depth--;
	free(ps->stack[ps->depth]);
	free(data);
}

static void
include_files(struct pstate *ps, const struct loc *at, const struct tok *arg)
{
	char msg[200], qb[200];
	char **paths = NULL;
	size_t n = 0;

	if (ps->io == NULL) {
		error_at(ps, at, "include is not available here (rules given as text)");
		return;
	}
	if (arg->vlen == 0 || memchr(arg->v, '\0', arg->vlen) != NULL) {
		error_at(ps, at, "bad include \"%s\": expected a file name or glob",
			 Q(arg, qb));
		return;
	}
	/* Relative to the directory of the including file.  Whether it is a
	 * glob is the argument's to say: the directory is a name, its '*',
	 * '?', '[' and '\' escaped for the glob (a review found "include
	 * sites/a.rules" in /srv/site[1]/ read as a glob that matched
	 * nothing: the file's rules dropped with only a warning). */
	const char *cur = at->file;
	const char *slash = strrchr(cur, '/');
	size_t dlen = (arg->v[0] != '/' && slash) ? (size_t)(slash - cur) + 1 : 0;
	int glob = has_glob_chars(arg->v, arg->vlen);
	char *name = malloc(dlen + arg->vlen + 1);
	char *pat = malloc(2 * dlen + arg->vlen + 1);
	if (name == NULL || pat == NULL) {
		free(name);
		free(pat);
		ps->oom = 1;
		return;
	}
	memcpy(name, cur, dlen);
	memcpy(name + dlen, arg->v, arg->vlen);
	name[dlen + arg->vlen] = '\0';
	size_t plen = 0;
	for (size_t i = 0; i < dlen; i++) {
		if (strchr("*?[\\", cur[i]) != NULL)
			pat[plen++] = '\\';
		pat[plen++] = cur[i];
	}
	memcpy(pat + plen, arg->v, arg->vlen);
	pat[plen + arg->vlen] = '\0';

	msg[0] = '\0';
	if (!glob) {
		/* a plain name: reading it reports a missing file */
		paths = malloc(sizeof(*paths));
		if (paths == NULL || (paths[0] = strdup(name)) == NULL) {
			free(paths);
			paths = NULL;
			ps->oom = 1;
		} else {
			n = 1;
		}
	} else if (ps->io->glob(ps->io->ctx, pat, &paths, &n, msg, sizeof(msg))) {
		error_at(ps, at, "cannot expand include \"%s\": %s", name, msg);
	} else {
		/* file order decides rule precedence ties: never trust the
		 * callback's order */
		if (n > 1)
			qsort(paths, n, sizeof(*paths), cmp_path);
		if (n == 0)
			warn_at(ps, at, "include \"%s\" matches no file", name);
	}
	for (size_t i = 0; i < n; i++)
		parse_file(ps, at, paths[i], glob);
	for (size_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	free(pat);
	free(name);
}

/* ------------------------------------------------------------------ */
/* Final pass                                                          */

/* A pattern with '?', '#' or '%': paths are matched decoded and without
 * the query, so it matches only a request that escaped the character. */
static void
warn_encoded(struct pstate *ps, const struct prule *pr)
{
	static const struct {
		char c;
		const char *esc, *why;
	} tab[] = {
		{ '?', "%3F", "the query string is never part of the path, so it cannot be matched here" },
		{ '#', "%23", "a raw '#' starts the fragment, which is not part of the path" },
		{ '%', "%25", "patterns are matched against the decoded path: write the character itself, not its escape" },
	};

	for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
		const char *at = memchr(pr->pat, tab[i].c, pr->pat_len);
		if (at == NULL)
			continue;
		struct loc l = pr->where;
		l.col += (size_t)(at - pr->pat);
		warn_at(ps, &l, "'%c' in rule \"%.*s\" matches only a request path that spells it %s: %s",
			tab[i].c, (int)pr->pat_len, pr->pat, tab[i].esc,
			tab[i].why);
		return;
	}
}

static int
cmp_exact(const void *x, const void *y)
{
	const struct rl_rule *a = *(const struct rl_rule *const *)x;
	const struct rl_rule *b = *(const struct rl_rule *const *)y;
	int c = strcmp(a->pattern.text, b->pattern.text);

	if (c != 0)
		return c;
	return a->index < b->index ? -1 : a->index > b->index;
}

int
rl_segment_names_file(const char *seg, size_t len, int wild)
{
	const char *dot = NULL;
	int letters = 0;

	for (size_t i = len; i-- > 0;)
		if (seg[i] == '.') {
			dot = seg + i;
			break;
		}
	if (dot == NULL || dot == seg)
		return 0;
	size_t n = len - (size_t)(dot + 1 - seg);
	if (n == 0 || n > 10)
		return 0;
	for (size_t i = 1; i <= n; i++) {
		if (!isalnum((unsigned char)dot[i]) && !(wild && dot[i] == '*'))
			return 0;
		letters |= !isdigit((unsigned char)dot[i]);
	}
	return letters;
}

/* Does the pattern name a file: its last segment, as
 * rl_segment_names_file reads it, stars allowed ("/report.cgi",
 * "/index.php", "/dl/big.7z" or a glob for PDF files, but not "/api/v1.2"
 * or a subtree)? */
static int
names_file(const struct rl_pattern *p)
{
	const char *seg = strrchr(p->text, '/') + 1;

	return rl_segment_names_file(seg, strlen(seg), 1);
}

/* A rule naming a file also covers the file followed by more segments:
 * web servers hand "/report.cgi/x" to report.cgi (PATH_INFO) and lighttpd
 * serves "/files/a.pdf/x" as a.pdf, so that spelling must not escape the
 * rule.  It takes such paths as "PATTERN/ **" (without the space) would,
 * but after every written wildcard pattern (cmp_glob): only paths no
 * written rule takes, so a directory or route named like a file
 * ("/pkg/chart.js") under a written subtree stays the subtree's. */
static void
add_file_subtree(struct pstate *ps, struct rl_rule *r)
{
	struct rl_ruleset *rs = ps->rs;
	size_t len = r->pattern.len + 3;
	char *src = rl_arena_alloc(ps->a, len + 1);
	char *buf = rl_arena_alloc(ps->a, len + 1);
	struct rl_pattern *p = rl_arena_alloc(ps->a, sizeof(*p));
	struct rl_diag d;

	if (src == NULL || buf == NULL || p == NULL) {
		ps->oom = 1;
		return;
	}
	memcpy(src, r->pattern.text, r->pattern.len);
	memcpy(src + r->pattern.len, "/**", 4);
	/* the text is folded already: no second folding */
	if (rl_pattern_compile(src, len, 0, p, buf, NULL, &d) != 0)
		return;         /* too long: the rule itself still matches */
	rs->globs[rs->nglobs++] = (struct rl_glob){ p, r, 1 };
}

/* Wildcard precedence: the longest literal prefix, then the most literal
 * bytes, then the fewest globstars (a whole-segment double star matches
 * any depth, so a one-segment star goes first), then the fewest wildcards,
 * then file order. */
static int
cmp_glob(const void *x, const void *y)
{
	const struct rl_glob *ga = x, *gb = y;
	const struct rl_rule *a = ga->rule, *b = gb->rule;
	const struct rl_pattern *pa = ga->pattern, *pb = gb->pattern;

	/* implied file subtrees only where no written pattern matches: a
	 * written subtree of /pkg keeps "/pkg/chart.js/readme.html" */
	if (ga->implicit != gb->implicit)
		return ga->implicit ? 1 : -1;
	if (pa->literal_prefix != pb->literal_prefix)
		return pa->literal_prefix > pb->literal_prefix ? -1 : 1;
	if (pa->literal_chars != pb->literal_chars)
		return pa->literal_chars > pb->literal_chars ? -1 : 1;
	if (pa->globstars != pb->globstars)
		return pa->globstars < pb->globstars ? -1 : 1;
	if (pa->wildcards != pb->wildcards)
		return pa->wildcards < pb->wildcards ? -1 : 1;
	return a->index < b->index ? -1 : a->index > b->index;
}

/* Short strategy names inside counter keys. */
static const char *const strategy_code[RL_STRATEGY_COUNT] = {
	"fw", "fwe", "mw", "swc", "gcra"
};

/* Bandwidth limits under the rule's strategy: their counter-key ids, and
 * no moving-window (one timestamp per counted byte). */
static void
check_bandwidth(struct pstate *ps, const struct loc *at, struct rl_limit *l,
		size_t n, enum rl_strategy strategy, const char *from)
{
	if (n > 0 && strategy == RL_MOVING_WINDOW) {
		error_at(ps, at, "bandwidth limits cannot use moving-window (it keeps one timestamp per counted unit): use sliding-window-counter%s",
			 from);
		return;
	}
	for (size_t i = 0; i < n; i++)
		snprintf(l[i].id, sizeof(l[i].id), "bw/%llu%s/%llu/%s",
			 (unsigned long long)l[i].count,
			 l[i].unit == 1 ? "" : l[i].unit == 1024 ? "k" : "m",
			 (unsigned long long)l[i].period_ms,
			 strategy_code[strategy]);
	for (size_t i = 0; i < n; i++)
		l[i].id_len = strlen(l[i].id);
}

/* Globals that depend on each other, once all are known. */
static void
finish_settings(struct pstate *ps)
{
	struct rl_settings *st = &ps->rs->settings;
	size_t sf = directive_index("store-failure");
	size_t lease = directive_index("concurrency-lease");
	size_t sa = directive_index("stats-allow");

	if (st->store_failure == RL_STORE_FAIL_FALLBACK &&
	    st->storage.kind != RL_STORAGE_REDIS)
		error_at(ps, &ps->value_at[sf], "store-failure fallback needs redis storage (it falls back to this host's shared-memory store while Redis is away): use deny or allow");
	if (ps->seen[lease].line == 0) {
		st->lease_ms = st->upstream_timeout_ms + LEASE_MARGIN_MS;
	} else if (st->lease_ms > 0 &&     /* 0: its line had an error */
		   st->lease_ms < st->upstream_timeout_ms) {
		char a[32], b[32];
		fmt_ms(a, sizeof(a), (uint64_t)st->lease_ms);
		fmt_ms(b, sizeof(b), (uint64_t)st->upstream_timeout_ms);
		warn_at(ps, &ps->value_at[lease], "concurrency-lease %s is shorter than upstream-timeout %s: a slow request's in-flight slot may expire while it still runs",
			a, b);
	}
	if (ps->seen[sa].line != 0 && st->stats == NULL)
		warn_at(ps, &ps->seen[sa], "stats-allow has no effect without stats PATH");
}

/* "; moving-window is the global strategy, set at FILE:LINE" when a
 * limit's strategy is the global one (its own line does not name it: a
 * review found the error pointing at a rule that says nothing of
 * moving-window, set in another included file), else "". */
static const char *
strategy_from(struct pstate *ps, int own, char *buf, size_t cap)
{
	const struct loc *g = &ps->seen[directive_index("strategy")];

	if (own || g->line == 0)
		return "";
	snprintf(buf, cap, "; %s is the global strategy, set at %s:%u",
		 rl_strategy_name(ps->rs->settings.strategy), g->file, g->line);
	return buf;
}

/* Validate limits under their strategy and set their counter-key ids. */
static void
check_limits(struct pstate *ps, const struct loc *at, struct rl_limit *l,
	     size_t n, enum rl_strategy strategy, uint64_t cost, uint64_t burst,
	     const char *from)
{
	for (size_t i = 0; i < n; i++) {
		snprintf(l[i].id, sizeof(l[i].id), "%llu/%llu/%s",
			 (unsigned long long)l[i].count,
			 (unsigned long long)l[i].period_ms,
			 strategy_code[strategy]);
		l[i].id_len = strlen(l[i].id);
		if (strategy == RL_MOVING_WINDOW && l[i].count > RL_MOVING_MAX)
			error_at(ps, at, "moving-window limit \"%s\" counts more than %d hits (it keeps one timestamp per hit): use sliding-window-counter or gcra%s",
				 l[i].text, RL_MOVING_MAX, from);
		uint64_t cap = (strategy == RL_GCRA && burst) ? burst : l[i].count;
		if (cost > cap)
			warn_at(ps, at, "cost %llu exceeds limit \"%s\"%s: every request will be denied",
				(unsigned long long)cost, l[i].text,
				cap != l[i].count ? " (its burst)" : "");
	}
}

/* "WHAT at FILE:LINE" in the arena, for rl_ruleset_max_moving_by. */
static const char *
who_at(struct pstate *ps, const char *what, const char *file, unsigned line)
{
	int n = snprintf(NULL, 0, "%s at %s:%u", what, file, line);
	char *s = n < 0 ? NULL : rl_arena_alloc(ps->a, (size_t)n + 1);

	if (s == NULL) {
		ps->oom = 1;
		return NULL;
	}
	snprintf(s, (size_t)n + 1, "%s at %s:%u", what, file, line);
	return s;
}

static void
finish(struct pstate *ps)
{
	struct rl_ruleset *rs = ps->rs;
	struct rl_settings *st = &rs->settings;
	char *buf;

	rs->nrules = ps->nrules;
	rs->rules = rl_arena_alloc(ps->a, (ps->nrules + 1) * sizeof(*rs->rules));
	rs->exact = rl_arena_alloc(ps->a, (ps->nrules + 1) * sizeof(*rs->exact));
	rs->globs = rl_arena_alloc(ps->a, (2 * ps->nrules + 1) * sizeof(*rs->globs));
	if (rs->rules == NULL || rs->exact == NULL || rs->globs == NULL) {
		ps->oom = 1;
		return;
	}
	finish_settings(ps);
	char from[RL_PATH_MAX];
	check_limits(ps, &ps->defaults_at, st->defaults, st->ndefaults,
		     st->strategy, 1, st->burst,
		     strategy_from(ps, 0, from, sizeof(from)));
	check_limits(ps, &ps->application_at, st->application,
		     st->napplication, st->strategy, 1, st->burst,
		     strategy_from(ps, 0, from, sizeof(from)));
	for (size_t i = 0; i < ps->nrules; i++) {
		struct prule *pr = ps->rules[i];
		struct rl_rule *r = &pr->r;
		struct rl_diag d;
		int never = 0;

		rs->rules[i] = r;
		buf = rl_arena_alloc(ps->a, pr->pat_len + 1);
		if (buf == NULL) {
			ps->oom = 1;
			return;
		}
		if (rl_pattern_compile(pr->pat, pr->pat_len, st->case_insensitive,
				       &r->pattern, buf, &never, &d) != 0) {
			struct loc at = pr->where;
			at.col += d.col;
			error_at(ps, &at, "%s", d.msg);
			continue;
		}
		if (never == RL_PAT_NEVER)
			warn_at(ps, &pr->where, "rule \"%.*s\" can never match: request paths are matched after normalisation (no '//', '.', '..', ';' or trailing '/'); write it as a normalised path",
				(int)pr->pat_len, pr->pat);
		else if (never == RL_PAT_ENCODED)
			warn_encoded(ps, pr);
		if (!pr->has_strategy)
			r->strategy = st->strategy;
		if (!pr->has_burst)
			r->burst = st->burst;
		if (r->scope == NULL)
			r->scope = r->pattern.text;
		if (pr->has_burst && r->strategy != RL_GCRA)
			warn_at(ps, &pr->burst_at, "burst= only applies to the gcra strategy; this rule uses %s",
				rl_strategy_name(r->strategy));
		const char *sf = strategy_from(ps, pr->has_strategy, from,
					       sizeof(from));
		check_limits(ps, &pr->limits_at, r->limits, r->nlimits,
			     r->strategy, r->cost, r->burst, sf);
		check_bandwidth(ps, &pr->bandwidth_at, r->bandwidth,
				r->nbandwidth, r->strategy, sf);
		r->sets_max_body = pr->has_max_body;
		if (!pr->has_max_body)
			r->max_body = st->max_body;
		if (r->concurrency > rs->max_inflight) {
			rs->max_inflight = r->concurrency;
			rs->max_inflight_by = who_at(ps, "the rule", r->file, r->line);
		}
		if (r->strategy == RL_MOVING_WINDOW)
			for (size_t j = 0; j < r->nlimits; j++)
				if (r->limits[j].count > rs->max_moving) {
					rs->max_moving = r->limits[j].count;
					rs->max_moving_by = who_at(ps, "the rule", r->file, r->line);
				}
		if (r->pattern.exact)
			rs->exact[rs->nexact++] = r;
		else
			rs->globs[rs->nglobs++] = (struct rl_glob){ &r->pattern, r, 0 };
		if (never == RL_PAT_OK && names_file(&r->pattern))
			add_file_subtree(ps, r);
	}
	if (st->strategy == RL_MOVING_WINDOW) {
		for (size_t j = 0; j < st->ndefaults; j++)
			if (st->defaults[j].count > rs->max_moving) {
				rs->max_moving = st->defaults[j].count;
				rs->max_moving_by = who_at(ps, "the default limits",
							   ps->defaults_at.file,
							   ps->defaults_at.line);
			}
		for (size_t j = 0; j < st->napplication; j++)
			if (st->application[j].count > rs->max_moving) {
				rs->max_moving = st->application[j].count;
				rs->max_moving_by = who_at(ps, "the application limits",
							   ps->application_at.file,
							   ps->application_at.line);
			}
	}
	if (ps->rep->nerrors > 0)
		return;
	if (rl_ruleset_key_heads(rs) < 0) {
		ps->oom = 1;
		return;
	}
	qsort(rs->exact, rs->nexact, sizeof(*rs->exact), cmp_exact);
	qsort(rs->globs, rs->nglobs, sizeof(*rs->globs), cmp_glob);

	/* Rules that limit nothing (an empty file, only exempt or settings
	 * rules): loading them is no mistake, but it is rarely meant. */
	int limits = st->ndefaults > 0 || st->napplication > 0 ||
		     st->max_body > 0;
	for (size_t i = 0; i < ps->nrules && !limits; i++) {
		const struct rl_rule *r = rs->rules[i];
		limits = r->nlimits > 0 || r->concurrency > 0 ||
			 r->nbandwidth > 0 || r->max_body > 0;
	}
	if (!limits) {
		struct loc at = { ps->top, 1, 0 };
		warn_at(ps, &at, "nothing is limited: no default, application or path limits (every request is allowed)");
	}

	/* Shadowed rules: same pattern, and every method it covers is taken by
	 * an earlier rule. */
	for (size_t i = 0; i < ps->nrules; i++) {
		struct rl_rule *r = rs->rules[i];
		unsigned covered = 0;
		const struct rl_rule *by = NULL;

		for (size_t j = 0; j < i; j++) {
			const struct rl_rule *e = rs->rules[j];
			if (strcmp(e->pattern.text, r->pattern.text) != 0)
				continue;
			/* an earlier settings rule lets matching go on: a
			 * rule with limits after it still applies, and so
			 * does a settings rule that sets more; a settings
			 * rule after a rule with limits (or exempt) is
			 * never reached */
			if (e->settings_only &&
			    (!r->settings_only ||
			     (r->sets_max_body && !e->sets_max_body) ||
			     (r->upstream != NULL && e->upstream == NULL)))
				continue;
			covered |= e->methods ? e->methods : ~0u;
			by = e;
		}
		unsigned want = r->methods ? r->methods : ~0u;
		if (by != NULL && (want & ~covered) == 0)
			warn_at(ps, &ps->rules[i]->where, "rule \"%s\" can never match: %s:%u has the same pattern%s",
				r->pattern.text, by->file, by->line,
				r->methods ? " for these methods" : "");
	}
}

/* stats-allow by default: this host only.  Static, shared by every
 * ruleset. */
static const struct rl_cidr default_stats_allow[] = {
	{ { 4, { 127, 0, 0, 1 } }, 32 },
	{ { 6, { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 } }, 128 },
};

static struct rl_ruleset *
load(const char *path, const char *name, const char *text, size_t len,
     const struct rl_io *io, struct rl_report *rep)
{
	struct pstate ps;
	struct rl_ruleset *rs = calloc(1, sizeof(*rs));

	memset(rep, 0, sizeof(*rep));
	memset(&ps, 0, sizeof(ps));
	if (rs == NULL)
		return NULL;
	ps.rs = rs;
	ps.a = &rs->arena;
	ps.io = io;
	ps.rep = rep;

	struct rl_settings *st = &rs->settings;
	st->enabled = 1;
	st->headers = 1;
	st->strategy = RL_FIXED_WINDOW;
	st->key_prefix = "rg";
	st->ipv4_prefix = 32;
	st->ipv6_prefix = 64;
	st->message = "Too Many Requests: rate limit exceeded";
	st->storage.kind = RL_STORAGE_SHM;
	st->storage.uri = "shm:rategate?size=64M";
	st->storage.shown = st->storage.uri;
	st->storage.path = "/dev/shm/rategate";
	st->storage.size = 64u << 20;
	st->storage.names = 1;
	st->upstream_timeout_ms = DEFAULT_UPSTREAM_TIMEOUT_MS;
	st->upstream_keepalive = RL_KEEPALIVE_DEFAULT;
	st->client_timeout_ms = DEFAULT_CLIENT_TIMEOUT_MS;
	st->stats_allow = default_stats_allow;
	st->nstats_allow = sizeof(default_stats_allow) /
			   sizeof(default_stats_allow[0]);

	st->key = rl_key_compile(ps.a, "addr", 4, &(struct rl_diag){ 0 });
	if (st->key == NULL)
		ps.oom = 1;
	else if (path != NULL) {
		struct loc none = { path, 0, 0 };
		ps.top = path;
		parse_file(&ps, &none, path, 0);
	} else {
		const char *file = rl_arena_strndup(ps.a, name, strlen(name));
		ps.top = file;
		rs->nfiles = 1;
		if (file == NULL)
			ps.oom = 1;
		else
			parse_text(&ps, file, text, len);
	}
	if (!ps.oom)
		finish(&ps);
	free(ps.rules);
	free(ps.read);
	if (ps.oom && rep->nerrors == 0) {
		struct loc at = { path ? path : name, 1, 0 };
		error_at(&ps, &at, "out of memory while loading rules");
	}
	if (ps.oom || rep->nerrors > 0) {
		rl_ruleset_free(rs);
		return NULL;
	}
	return rs;
}

struct rl_ruleset *
rl_ruleset_load(const char *path, const struct rl_io *io,
		struct rl_report *rep)
{
	return load(path, NULL, NULL, 0, io, rep);
}

struct rl_ruleset *
rl_ruleset_parse(const char *name, const char *text, size_t len,
		 const struct rl_io *io, struct rl_report *rep)
{
	return load(NULL, name, text, len, io, rep);
}

void
rl_ruleset_free(struct rl_ruleset *rs)
{
	if (rs == NULL)
		return;
	rl_arena_free(&rs->arena);
	free(rs);
}

const struct rl_settings *
rl_ruleset_settings(const struct rl_ruleset *rs)
{
	return &rs->settings;
}

size_t
rl_ruleset_nrules(const struct rl_ruleset *rs)
{
	return rs->nrules;
}

const struct rl_rule *
rl_ruleset_rule(const struct rl_ruleset *rs, size_t i)
{
	return i < rs->nrules ? rs->rules[i] : NULL;
}

size_t
rl_ruleset_nfiles(const struct rl_ruleset *rs)
{
	return rs->nfiles;
}

uint64_t
rl_ruleset_max_moving(const struct rl_ruleset *rs)
{
	return rs->max_moving;
}

uint64_t
rl_ruleset_max_inflight(const struct rl_ruleset *rs)
{
	return rs->max_inflight;
}

const char *
rl_ruleset_max_moving_by(const struct rl_ruleset *rs)
{
	return rs->max_moving_by;
}

const char *
rl_ruleset_max_inflight_by(const struct rl_ruleset *rs)
{
	return rs->max_inflight_by;
}

/* One matching rule, in precedence order: take its settings when none
 * was taken yet.  Returns 1 when it ends the search (it has limits). */
static int
match_take(const struct rl_rule *r, struct rl_match *m)
{
	if (m->body == NULL && r->sets_max_body)
		m->body = r;
	if (m->upstream == NULL && r->upstream != NULL)
		m->upstream = r;
	if (r->settings_only)
		return 0;
	m->rule = r;
	return 1;
}

/* Exact rules first (in file order, those whose methods fit), then
 * wildcard rules in precedence order. */
void
rl_ruleset_match(const struct rl_ruleset *rs, const char *path, size_t len,
		 unsigned method_bit, struct rl_match *m)
{
	size_t lo = 0, hi = rs->nexact;

	m->rule = m->body = m->upstream = NULL;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct rl_rule *r = rs->exact[mid];
		int c = strncmp(r->pattern.text, path, len);
		if (c == 0 && r->pattern.len > len)
			c = 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < rs->nexact; i++) {
		const struct rl_rule *r = rs->exact[i];
		if (r->pattern.len != len || memcmp(r->pattern.text, path, len) != 0)
			break;
		if ((r->methods == 0 || (r->methods & method_bit)) &&
		    match_take(r, m))
			return;
	}
	for (size_t i = 0; i < rs->nglobs; i++) {
		const struct rl_rule *r = rs->globs[i].rule;
		if ((r->methods == 0 || (r->methods & method_bit)) &&
		    rl_pattern_match(rs->globs[i].pattern, path, len) &&
		    match_take(r, m))
			return;
	}
}
