/*
 * keys.c - who the client is, as a counter key.
 *
 * A key spec names where the key comes from: "addr" (the resolved client
 * address, grouped by ipv4-prefix / ipv6-prefix), "header:X-Api-Key",
 * "cookie:session", "query:api_key", "var:REMOTE_USER".  Parts joined by '+'
 * must all be present ("header:X-Api-Key+addr"); alternatives joined by '|'
 * are tried in order ("header:X-Api-Key|addr").
 *
 * A part is missing when absent, empty after trimming spaces, longer than
 * RL_KEYPART_MAX bytes, containing control bytes, or ambiguous (a cookie or
 * query parameter given twice with different values, a header sent twice
 * with different values): then the next alternative is tried, and when none
 * is left the rule's missing-key policy applies (decide.c).  So a client
 * can neither skip a limit by omitting a header nor pick someone else's
 * bucket, and "everyone without the header" never share one bucket.
 *
 * Rendered keys label every part ("h.x-api-key=abc+addr=192.0.2.1") and
 * escape values, so no value can imitate another part.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define MAX_ALTS 4
#define MAX_PARTS 4
#define NAME_MAX_LEN 64

int
rl_key_escape(char *buf, size_t cap, size_t *pos, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	/* bytes kept as they are: alphanumerics and ._~/-* */
	static const unsigned char safe[256] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  /* 0x00 */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  /* 0x10 */
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1,  /* 0x20 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,  /* 0x30 */
		0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,  /* 0x40 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,  /* 0x50 */
		0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,  /* 0x60 */
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0,  /* 0x70 */
		/* 0x80-0xff: 0 */
	};
	size_t p = *pos;

	for (size_t i = 0; i < len;) {
		/* a run of safe bytes in one copy, then one escaped byte */
		size_t j = i;
		while (j < len && safe[(unsigned char)s[j]])
			j++;
		if (j > i) {
			if (p + (j - i) >= cap)
				return -1;
			memcpy(buf + p, s + i, j - i);
			p += j - i;
			i = j;
			if (i == len)
				break;
		}
		unsigned char c = (unsigned char)s[i++];
		if (p + 3 >= cap)
			return -1;
		buf[p++] = '%';
		buf[p++] = hex[c >> 4];
		buf[p++] = hex[c & 15];
	}
	buf[p] = '\0';
	*pos = p;
	return 0;
}

int
rl_put(char *buf, size_t cap, size_t *pos, const char *s, size_t len)
{
	if (*pos + len + 1 > cap)
		return -1;
	memcpy(buf + *pos, s, len);
	*pos += len;
	buf[*pos] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ */
/* Compiling                                                           */

static const struct {
	const char *word;
	enum rl_key_source src;
} sources[] = {
	{ "header", RL_KEY_HEADER }, { "cookie", RL_KEY_COOKIE },
	{ "query", RL_KEY_QUERY }, { "var", RL_KEY_VAR },
};

static int
part_compile(struct rl_arena *a, const char *s, size_t len, size_t col,
	     struct rl_key_part *p, struct rl_diag *d)
{
	if (len == 4 && memcmp(s, "addr", 4) == 0) {
		p->src = RL_KEY_ADDR;
		return 0;
	}
	const char *colon = memchr(s, ':', len);
	size_t wlen = colon ? (size_t)(colon - s) : len;
	size_t i;

	for (i = 0; i < sizeof(sources) / sizeof(sources[0]); i++)
		if (strlen(sources[i].word) == wlen &&
		    memcmp(sources[i].word, s, wlen) == 0)
			break;
	if (i == sizeof(sources) / sizeof(sources[0]) || colon == NULL) {
		d->col = col;
		snprintf(d->msg, sizeof(d->msg),
			 "bad key part \"%.*s\": expected addr, header:NAME, cookie:NAME, query:NAME or var:NAME",
			 (int)(len > 40 ? 40 : len), s);
		return -1;
	}
	p->src = sources[i].src;
	const char *name = colon + 1;
	size_t nlen = len - wlen - 1;
	int ok = nlen > 0 && nlen <= NAME_MAX_LEN;
	for (size_t j = 0; ok && j < nlen; j++) {
		unsigned char c = (unsigned char)name[j];
		ok = isalnum(c) || c == '_' || c == '-' ||
		     (p->src != RL_KEY_HEADER && p->src != RL_KEY_VAR && c == '.');
	}
	if (!ok) {
		d->col = col + wlen + 1;
		snprintf(d->msg, sizeof(d->msg),
			 "bad %s name \"%.*s\": expected 1 to %d letters, digits, '_' or '-'",
			 sources[i].word, (int)(nlen > 40 ? 40 : nlen), name,
			 NAME_MAX_LEN);
		return -1;
	}
	p->name = rl_arena_strndup(a, name, nlen);
	if (p->name == NULL)
		goto oom;
	if (p->src == RL_KEY_HEADER) {
		/* The CGI variable a web server puts a header in. */
		char *v = rl_arena_alloc(a, nlen + 6);
		if (v == NULL)
			goto oom;
		memcpy(v, "HTTP_", 5);
		for (size_t j = 0; j < nlen; j++)
			v[5 + j] = name[j] == '-' ? '_' :
				   (char)toupper((unsigned char)name[j]);
		p->var = v;
	} else if (p->src == RL_KEY_VAR) {
		p->var = p->name;
	} else if (p->src == RL_KEY_COOKIE) {
		p->var = "HTTP_COOKIE";
	}
	return 0;
oom:
	d->col = col;
	snprintf(d->msg, sizeof(d->msg), "out of memory");
	return -1;
}

struct rl_key *
rl_key_compile(struct rl_arena *a, const char *s, size_t len,
	       struct rl_diag *d)
{
	struct rl_key *k = rl_arena_alloc(a, sizeof(*k));
	size_t pos = 0;

	if (k == NULL)
		return NULL;
	k->text = rl_arena_strndup(a, s, len);
	k->alts = rl_arena_alloc(a, MAX_ALTS * sizeof(*k->alts));
	if (k->text == NULL || k->alts == NULL)
		return NULL;
	if (len == 0) {
		d->col = 0;
		snprintf(d->msg, sizeof(d->msg),
			 "empty key: expected addr, header:NAME, cookie:NAME, query:NAME or var:NAME");
		return NULL;
	}
	while (pos <= len) {
		const char *bar = memchr(s + pos, '|', len - pos);
		size_t end = bar ? (size_t)(bar - s) : len;

		if (k->nalts == MAX_ALTS) {
			d->col = pos;
			snprintf(d->msg, sizeof(d->msg),
				 "too many key alternatives (more than %d)", MAX_ALTS);
			return NULL;
		}
		struct rl_key_alt *alt = &k->alts[k->nalts++];
		alt->parts = rl_arena_alloc(a, MAX_PARTS * sizeof(*alt->parts));
		if (alt->parts == NULL)
			return NULL;
		size_t p = pos;
		while (p <= end) {
			const char *plus = memchr(s + p, '+', end - p);
			size_t pend = plus ? (size_t)(plus - s) : end;

			if (pend == p) {
				d->col = p;
				snprintf(d->msg, sizeof(d->msg),
					 "empty key part in \"%.*s\": expected a part between separators",
					 (int)(len > 60 ? 60 : len), s);
				return NULL;
			}
			if (alt->nparts == MAX_PARTS) {
				d->col = p;
				snprintf(d->msg, sizeof(d->msg),
					 "too many key parts joined by '+' (more than %d)",
					 MAX_PARTS);
				return NULL;
			}
			if (part_compile(a, s + p, pend - p, p,
					 &alt->parts[alt->nparts++], d))
				return NULL;
			p = pend + 1;
		}
		pos = end + 1;
	}
	return k;
}

/* ------------------------------------------------------------------ */
/* Rendering                                                           */

static int
usable(const char *s, size_t len)
{
	if (len == 0 || len > RL_KEYPART_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* One value seen for a name.  A second, different value makes it
 * ambiguous.  v is NULL until a value is kept (a value too long to keep
 * only counts), hence the length test before memcmp. */
struct found {
	const char *v;
	size_t len;
	int n;
	int ambiguous;
};

static void
found_add(struct found *f, const char *v, size_t len)
{
	if (f->n > 0 && (f->len != len || (len > 0 && memcmp(f->v, v, len) != 0)))
		f->ambiguous = 1;
	f->v = v;
	f->len = len;
	f->n++;
}

/* Percent-decode (and '+' as space) a query component into out.  Returns the
 * decoded length, or -1 when it does not fit. */
static long
qdecode(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		int hi, lo;
		if (c == '+')
			c = ' ';
		else if (c == '%' && i + 2 < len &&
			 (hi = rl_hex_value((unsigned char)s[i + 1])) >= 0 &&
			 (lo = rl_hex_value((unsigned char)s[i + 2])) >= 0) {
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o >= cap)
			return -1;
		out[o++] = c;
	}
	return (long)o;
}

/* A parameter or cookie name longer than this, decoded, makes the lookup
 * ambiguous (see name_is: it could not be compared the way PHP reads it). */
#define NAME_SCAN_MAX 1024

/* n[0..len) as PHP registers a variable name: leading spaces dropped, an
 * array subscript ("[...]" with its ']') and what follows cut off, and
 * ' ', '.' and an unclosed '[' made '_'.  Written to out (NAME_MAX_LEN
 * bytes at most); returns its length, or NAME_MAX_LEN + 1 when longer
 * (no key name is). */
static size_t
php_name(const char *n, size_t len, char *out)
{
	size_t i = 0, o = 0;

	while (i < len && n[i] == ' ')
		i++;
	for (; i < len; i++) {
		char c = n[i];
		if (c == '[' && memchr(n + i, ']', len - i) != NULL)
			break;
		if (o == NAME_MAX_LEN)
			return NAME_MAX_LEN + 1;
		out[o++] = c == ' ' || c == '.' || c == '[' ? '_' : c;
	}
	return o;
}

/* Is the (decoded) parameter or cookie name cand[0..clen) the key's name?
 * Spelled the same, or the same to PHP, which reads "api.key", "api key",
 * " api_key" and "api_key[x]" all as api_key: a client sending both
 * "api_key=made-up" and "api.key=real" would otherwise be counted under
 * a value of its choosing while the application reads the real one.  The
 * two then count as two values of one name (ambiguous, unless equal). */
static int
name_is(const char *cand, size_t clen, const char *name)
{
	size_t nlen = strlen(name);
	char a[NAME_MAX_LEN + 1], b[NAME_MAX_LEN + 1];
	const char *nul = memchr(cand, '\0', clen);

	/* PHP's names are C strings: "api_key%00x" is api_key to it */
	if (nul != NULL)
		clen = (size_t)(nul - cand);

	if (clen == nlen && memcmp(cand, name, nlen) == 0)
		return 1;
	size_t al = php_name(cand, clen, a), bl = php_name(name, nlen, b);
	return al == bl && al > 0 && al <= NAME_MAX_LEN &&
	       memcmp(a, b, al) == 0;
}

/* Query parameter name: decoded values, trimmed of spaces and tabs as
 * header values are, compared, so "a%62", "ab" and "+ab" are one key and
 * a value of only spaces ("?user=+") is empty, that is missing. */
static int
query_lookup(const struct rl_request *req, const char *name, char *vbuf,
	     size_t vcap, size_t *vlen)
{
	char nbuf[NAME_SCAN_MAX], first[RL_KEYPART_MAX + 1];
	size_t pos = 0, qlen = req->query ? req->query_len : 0;
	long firstlen = -1;

	/* A raw ';' separates parameters to some applications (Perl's
	 * CGI.pm, older Python and Go): "x=1;user=alice&user=bob" is alice
	 * to them and bob to us, so any such query is ambiguous, that is
	 * unusable for a key. */
	if (qlen > 0 && memchr(req->query, ';', qlen) != NULL)
		return -1;

	while (pos < qlen) {
		const char *q = req->query + pos;
		const char *amp = memchr(q, '&', qlen - pos);
		size_t plen = amp ? (size_t)(amp - q) : qlen - pos;
		const char *eq = memchr(q, '=', plen);
		size_t nl = eq ? (size_t)(eq - q) : plen;
		long dn = qdecode(q, nl, nbuf, sizeof(nbuf));

		pos += plen + 1;
		if (dn < 0)
			return -1;      /* a name too long to compare */
		if (!name_is(nbuf, (size_t)dn, name))
			continue;
		long dv = eq ? qdecode(eq + 1, plen - nl - 1, vbuf, vcap) : 0;
		if (dv < 0 || (size_t)dv > sizeof(first))
			return -1;      /* too long: unusable */
		const char *tv = vbuf;
		size_t tl = (size_t)dv;
		rl_trim(&tv, &tl);
		memmove(vbuf, tv, tl);
		dv = (long)tl;
		if (firstlen >= 0 &&
		    (firstlen != dv || memcmp(first, vbuf, (size_t)dv) != 0))
			return -1;      /* ambiguous */
		memcpy(first, vbuf, (size_t)dv);
		firstlen = dv;
	}
	if (firstlen < 0)
		return -1;
	memcpy(vbuf, first, (size_t)firstlen);
	*vlen = (size_t)firstlen;
	return 0;
}

/* RFC 6265 cookie-octets, optionally inside one pair of DQUOTEs: what a
 * cookie value is.  A value with anything else (a space, ',', '\\', a
 * quote inside) is split or read differently by different parsers (old
 * Rack splits on ','), so it cannot be a key. */
static int
cookie_octets(const char *v, size_t len)
{
	if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
		v++;
		len -= 2;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == ';' ||
		    c == '\\')
			return 0;
	}
	return 1;
}

/* The next ';'-separated piece of s from *pos, untrimmed; 0 at the end. */
static int
cookie_next(const char *s, size_t len, size_t *pos, const char **c,
	    size_t *clen)
{
	if (*pos >= len)
		return 0;
	const char *semi = memchr(s + *pos, ';', len - *pos);
	size_t end = semi ? (size_t)(semi - s) : len;
	*c = s + *pos;
	*clen = end - *pos;
	*pos = end + 1;
	return 1;
}

/* Is the whole Cookie header value well formed (RFC 6265): pairs
 * separated by ';' and optional spaces, each a token, '=' and a value of
 * cookie-octets (in quotes or not), at most COOKIE_PAIRS_MAX of them?
 * Parsers part ways on anything else, and a key read from a header they
 * read differently could be one the application does not see (found by
 * a review): Python's SimpleCookie reads "x=1 sid=real" as two pairs and
 * drops a whole header with one pair without '='; Werkzeug keeps ';'
 * inside a quoted value and strips Unicode spaces and control bytes from
 * names; PHP drops a name nested deeper than 64 "[...]" and every pair
 * past max_input_vars (1000).  Such a header makes a cookie key
 * ambiguous (the key's next alternative decides), named cookie or not. */
#define COOKIE_PAIRS_MAX 1000

static int
cookie_header_ok(const char *s, size_t len)
{
	size_t pos = 0, pairs = 0, clen;
	const char *c;

	while (cookie_next(s, len, &pos, &c, &clen)) {
		rl_trim(&c, &clen);
		if (clen == 0)
			continue;
		if (++pairs > COOKIE_PAIRS_MAX)
			return 0;
		const char *eq = memchr(c, '=', clen);
		if (eq == NULL || eq == c)
			return 0;
		for (const char *n = c; n < eq; n++) {
			unsigned char b = (unsigned char)*n;
			if (b == 0 || (!isalnum(b) &&
				       strchr("!#$%&'*+-.^_`|~", b) == NULL))
				return 0;
		}
		if (!cookie_octets(eq + 1, clen - (size_t)(eq + 1 - c)))
			return 0;
	}
	return 1;
}

/* Each cookie named name in s, read so that rategate never counts a
 * cookie the application does not see, nor one value of it under two
 * keys (found by a review against PHP 8.2):
 *
 * - Names.  PHP compares them as sent (not percent-decoded, since PHP
 *   7.4.11), through its name mangling (name_is); Rack and Go decode or
 *   trim them.  A cookie whose name is NAME only once decoded or trimmed
 *   ("s%69d", "sid ") is NAME to some applications and not to others:
 *   ambiguous, so the key falls to its next alternative.  (Decoding it,
 *   as before, let "s%69d=made-up" pick the key while PHP saw no sid.)
 * - A cookie without '=' ("sid") is NAME with an empty value, as PHP
 *   reads it: "sid; sid=made-up" is two values (ambiguous), not made-up.
 * - Values.  One made of cookie-octets (in quotes or not), else
 *   ambiguous; then percent-decoded, every '+' (sent or decoded) read as
 *   a space and one pair of surrounding quotes dropped.  PHP decodes
 *   without '+' as space and keeps quotes, Rack decodes '+' as space,
 *   Python and Go drop quotes: the key is a function of what any of them
 *   reads ("a+b", "a%2Bb", "a%20b" are one key, as are "q1", "\"q1\""
 *   and "%22q1%22"), so one session cannot be spelled into several
 *   budgets; the price is that values only such spellings tell apart
 *   share one.
 *
 * The value is copied into buf (cap bytes); one that does not fit is
 * unusable. */
static void
cookie_scan(const char *s, size_t len, const char *name, struct found *f,
	    char *buf, size_t cap)
{
	size_t pos = 0, clen;
	const char *c;
	char tmp[RL_KEYPART_MAX + 1];

	if (!cookie_header_ok(s, len)) {
		f->ambiguous = 1;
		f->n++;
		return;
	}

	while (cookie_next(s, len, &pos, &c, &clen)) {
		rl_trim(&c, &clen);
		/* PHP skips every leading isspace() byte of a cookie's name */
		while (clen > 0 && isspace((unsigned char)*c)) {
			c++;
			clen--;
		}
		if (clen == 0)
			continue;
		const char *eq = memchr(c, '=', clen);
		size_t cn = eq ? (size_t)(eq - c) : clen;
		if (!name_is(c, cn, name)) {
			char nbuf[NAME_SCAN_MAX];
			long dn = qdecode(c, cn, nbuf, sizeof(nbuf));
			const char *d = nbuf;
			size_t dl = dn < 0 ? 0 : (size_t)dn;
			rl_trim(&d, &dl);
			if (dn < 0 || name_is(d, dl, name)) {
				f->ambiguous = 1;       /* see above; or too long */
				f->n++;
			}
			continue;
		}
		if (eq == NULL) {
			found_add(f, "", 0);
			continue;
		}
		const char *v = eq + 1;
		size_t vl = clen - cn - 1;
		long dl = cookie_octets(v, vl) ?
			  qdecode(v, vl, tmp, sizeof(tmp)) : -1;
		if (dl < 0 || (size_t)dl > cap) {
			f->ambiguous = 1;       /* not a cookie value, or too long */
			f->n++;
			continue;
		}
		size_t o = (size_t)dl;
		for (size_t i = 0; i < o; i++)
			if (tmp[i] == '+')
				tmp[i] = ' ';
		char *t = tmp;
		if (o >= 2 && t[0] == '"' && t[o - 1] == '"') {
			t++;
			o -= 2;
		}
		/* compared with the value before, then kept in buf: tmp is
		 * the next value's */
		found_add(f, t, o);
		memcpy(buf, t, o);
		f->v = buf;
	}
}

/* The key "addr" alone, as the loop of rl_key_render renders it: an
 * address text is always usable (short, no control bytes). */
int
rl_key_render_addr(const char *addr_text, size_t addr_len, char *buf,
		   size_t cap, size_t *len)
{
	size_t pos = 5;

	if (addr_len == 0)
		return -1;
	if (cap < 6)
		return -1;
	memcpy(buf, "addr=", 5);
	if (memchr(addr_text, ':', addr_len) == NULL) {
		/* IPv4 text, [0-9./] only: nothing to escape */
		if (pos + addr_len + 1 > cap)
			return -1;
		memcpy(buf + pos, addr_text, addr_len);
		pos += addr_len;
		buf[pos] = '\0';
	} else if (rl_key_escape(buf, cap, &pos, addr_text, addr_len)) {
		return -1;
	}
	*len = pos;
	return 0;
}

int
rl_key_render(const struct rl_key *k, const struct rl_request *req,
	      const char *addr_text, size_t addr_len, char *buf, size_t cap,
	      size_t *len)
{
	char qv[RL_KEYPART_MAX + 1];

	if (k->nalts == 1 && k->alts[0].nparts == 1 &&
	    k->alts[0].parts[0].src == RL_KEY_ADDR)
		return rl_key_render_addr(addr_text, addr_len, buf, cap, len);

	for (size_t ai = 0; ai < k->nalts; ai++) {
		const struct rl_key_alt *alt = &k->alts[ai];
		size_t pos = 0;
		int ok = 1;

		buf[0] = '\0';
		for (size_t pi = 0; ok && pi < alt->nparts; pi++) {
			const struct rl_key_part *p = &alt->parts[pi];
			struct found f = { NULL, 0, 0, 0 };
			const char *label = "";

			if (pi > 0 && rl_put(buf, cap, &pos, "+", 1))
				return -1;
			switch (p->src) {
			case RL_KEY_ADDR:
				if (addr_len == 0) {
					ok = 0;
					break;
				}
				f.v = addr_text;
				f.len = addr_len;
				f.n = 1;
				label = "addr";
				break;
			case RL_KEY_HEADER:
			case RL_KEY_VAR:
			case RL_KEY_COOKIE: {
				size_t vl = strlen(p->var);
				for (size_t i = 0; i < req->nparams; i++) {
					const struct rl_param *pm = &req->params[i];
					if (pm->name_len != vl ||
					    memcmp(pm->name, p->var, vl) != 0)
						continue;
					if (p->src == RL_KEY_COOKIE) {
						cookie_scan(pm->value, pm->value_len,
							    p->name, &f, qv,
							    sizeof(qv));
					} else {
						const char *v = pm->value;
						size_t l = pm->value_len;
						rl_trim(&v, &l);
						found_add(&f, v, l);
					}
				}
				label = p->src == RL_KEY_HEADER ? "h." :
					p->src == RL_KEY_VAR ? "v." : "c.";
				if (f.n > 0 && !f.ambiguous)
					rl_trim(&f.v, &f.len);
				break;
			}
			case RL_KEY_QUERY: {
				size_t vl;
				if (query_lookup(req, p->name, qv, sizeof(qv), &vl) == 0) {
					f.v = qv;
					f.len = vl;
					f.n = 1;
				}
				label = "q.";
				break;
			}
			}
			if (!ok || f.n == 0 || f.ambiguous || !usable(f.v, f.len)) {
				ok = 0;
				break;
			}
			if (rl_put(buf, cap, &pos, label, strlen(label)))
				return -1;
			if (p->name != NULL) {
				char lname[NAME_MAX_LEN + 1];
				size_t nl = strlen(p->name);
				for (size_t i = 0; i < nl; i++)
					lname[i] = p->src == RL_KEY_HEADER ?
						   (char)tolower((unsigned char)p->name[i]) :
						   p->name[i];
				if (rl_put(buf, cap, &pos, lname, nl))
					return -1;
			}
			if (rl_put(buf, cap, &pos, "=", 1) ||
			    rl_key_escape(buf, cap, &pos, f.v, f.len))
				return -1;
		}
		if (ok) {
			*len = pos;
			return 0;
		}
	}
	return -1;
}

/* Is text[0..n) a key part as the log's key= field writes it: "addr=..."
 * or "h.NAME=...", "c.NAME=", "q.NAME=", "v.NAME="?  Its label's length
 * (up to and with the '='), or 0. */
static size_t
part_label(const char *text, size_t n)
{
	const char *eq = memchr(text, '=', n);

	if (eq == NULL)
		return 0;
	size_t l = (size_t)(eq - text);
	if ((l == 4 && memcmp(text, "addr", 4) == 0) ||
	    (l >= 3 && text[1] == '.' && strchr("hcqv", text[0]) != NULL &&
	     memchr(text, ':', l) == NULL && memchr(text, '+', l) == NULL))
		return l + 1;
	return 0;
}

/* Is v[0..n) a value as the log writes a hashed one, '#' and 16 hex
 * digits?  Then *h is that hash. */
static int
hash_form(const char *v, size_t n, uint64_t *h)
{
	*h = 0;
	if (n != 17 || v[0] != '#')
		return 0;
	for (size_t i = 1; i < 17; i++) {
		int x = rl_hex_value((unsigned char)v[i]);
		if (x < 0)
			return 0;
		*h = *h << 4 | (uint64_t)x;
	}
	return 1;
}

/* A whole key part of name: "LABEL=VALUE", or "LABEL=#HASH" as the log
 * writes a header, cookie or query value (rl_fnv1a of the value as the
 * key holds it, 16 hex digits); an address value may be written as the
 * address ("addr=2001:db8::/64").  Whole: between ':' or '+' (or the
 * start) and ':' or '+' (or the end), so that addr=192.0.2.1 does not
 * take addr=192.0.2.10 along. */
static int
part_match(const char *name, size_t len, const char *text, size_t n,
	   size_t label)
{
	const char *v = text + label;
	size_t vl = n - label;
	/* "h.x-api-key=k1:", the old way to end a value, still works */
	if (vl > 0 && v[vl - 1] == ':')
		vl--;
	char want[RL_STORE_KEY_MAX];
	size_t wl = 0;
	uint64_t h;
	int hashed = hash_form(v, vl, &h);

	if (!hashed) {
		struct rl_cidr c;
		if (label + vl > sizeof(want))
			return 0;
		memcpy(want, text, label);
		wl = label;
		if (rl_cidr_parse(v, vl, &c) == 0) {
			if (rl_key_escape(want, sizeof(want), &wl, v, vl) != 0)
				return 0;
		} else {
			memcpy(want + wl, v, vl);
			wl += vl;
		}
	}
	for (size_t p = 0; p + label <= len; p++) {
		if ((p > 0 && name[p - 1] != ':' && name[p - 1] != '+') ||
		    memcmp(name + p, text, label) != 0)
			continue;
		size_t e = p + label;
		while (e < len && name[e] != ':' && name[e] != '+')
			e++;
		const char *sv = name + p + label;
		size_t sl = e - p - label;
		uint64_t sh;
		/* a name compacted for the store's name record holds a long
		 * value as the log writes it (rl_key_name_compact) */
		int stored_hash = hash_form(sv, sl, &sh);
		if (hashed ? (stored_hash ? sh == h : rl_fnv1a(sv, sl) == h) :
			     e - p == wl && memcmp(name + p, want, wl) == 0)
			return 1;
		if (!hashed && stored_hash && wl - label > 17 &&
		    rl_fnv1a(want + label, wl - label) == sh)
			return 1;
	}
	return 0;
}

int
rl_key_name_match(const char *name, size_t len, const char *text)
{
	size_t n = strlen(text);
	size_t label = part_label(text, n);

	/* a key of several parts as the log writes it
	 * ("h.x-api-key=#08be0f07b56224c1+addr=192.0.2.1"): every part,
	 * each whole (part_match stops a value at '+') */
	if (label > 0 && memchr(text, '+', n) != NULL) {
		const char *p = text;
		for (;;) {
			const char *plus = strchr(p, '+');
			size_t pl = plus ? (size_t)(plus - p) : strlen(p);
			size_t l = part_label(p, pl);
			if (l == 0)
				break;  /* not all parts: matched as text below */
			if (!part_match(name, len, p, pl, l))
				return 0;
			if (plus == NULL)
				return 1;
			p = plus + 1;
		}
		label = 0;
	}
	if (label > 0)
		return part_match(name, len, text, n, label);
	struct rl_cidr c;
	int whole = rl_cidr_parse(text, n, &c) == 0;
	char esc[RL_STORE_KEY_MAX];
	size_t elen = 0;

	/* an address is written in keys escaped ("2001%3Adb8%3A%3A/64"):
	 * look for it so */
	if (whole) {
		esc[0] = '\0';
		if (rl_key_escape(esc, sizeof(esc), &elen, text, n) != 0)
			return 0;
		text = esc;
		n = elen;
	}
	if (n == 0 || n > len)
		return n == 0;
	for (size_t p = 0; p + n <= len; p++) {
		if (memcmp(name + p, text, n) != 0)
			continue;
		if (!whole)
			return 1;
		char before = p ? name[p - 1] : ':';
		char after = p + n < len ? name[p + n] : ':';
		if (strchr("=:+", before) != NULL && strchr(":+", after) != NULL)
			return 1;
	}
	return 0;
}

int
rl_key_part_secret(const char *p, size_t n)
{
	if (n < 3 || p[1] != '.' || memchr(p, '=', n) == NULL)
		return 0;
	if (p[0] == 'h' || p[0] == 'c' || p[0] == 'q')
		return 1;
	return p[0] == 'v' && n >= 7 && strncasecmp(p + 2, "HTTP_", 5) == 0;
}

/* Append v[0..n) to out at *o, as far as cap allows. */
static void
put_some(char *out, size_t cap, size_t *o, const char *v, size_t n)
{
	if (n > cap - *o)
		n = cap - *o;
	memcpy(out + *o, v, n);
	*o += n;
}

size_t
rl_key_name_compact(const char *key, size_t len, char *out, size_t cap,
		    int *cut)
{
	char buf[RL_STORE_KEY_MAX];
	size_t o = 0;

	*cut = 0;
	if (len <= cap) {
		memcpy(out, key, len);
		return len;
	}
	/* 1. long header, cookie and query values as the log writes them;
	 * fields are split by ':' and parts by '+', which values never hold
	 * (rl_key_escape writes them %3A, %2B) */
	for (size_t p = 0; p < len;) {
		size_t e = p;
		while (e < len && key[e] != ':' && key[e] != '+')
			e++;
		size_t label = part_label(key + p, e - p);
		if (label > 2 && rl_key_part_secret(key + p, e - p) &&
		    e - p - label > 17) {
			char hb[17];
			rl_hash_text(key + p + label, e - p - label, hb);
			put_some(buf, sizeof(buf), &o, key + p, label);
			put_some(buf, sizeof(buf), &o, hb, sizeof(hb));
		} else {
			put_some(buf, sizeof(buf), &o, key + p, e - p);
		}
		if (e < len)
			put_some(buf, sizeof(buf), &o, key + e, 1);
		p = e + 1;
	}
	if (o <= cap) {
		memcpy(out, buf, o);
		return o;
	}
	/* 2. the middle of the longest field that is no key part (the
	 * scope: a rule's path) as "...", keeping the client's parts and
	 * the limit whole */
	size_t best = 0, best_len = 0;
	for (size_t p = 0; p < o;) {
		size_t e = p;
		while (e < o && buf[e] != ':')
			e++;
		/* not the prefix (the first field) nor the limit (the last) */
		if (p > 0 && e < o &&
		    part_label(buf + p, e - p) == 0 && e - p > best_len) {
			best = p;
			best_len = e - p;
		}
		p = e + 1;
	}
	size_t drop = o - cap + 3;
	if (best_len >= drop + 8) {
		size_t keep = best_len - drop, head = (keep + 1) / 2;
		size_t n = 0;
		put_some(out, cap, &n, buf, best + head);
		put_some(out, cap, &n, "...", 3);
		put_some(out, cap, &n, buf + best + best_len - (keep - head),
			 o - (best + best_len - (keep - head)));
		return n;
	}
	/* 3. what is left: its first cap bytes */
	*cut = 1;
	memcpy(out, buf, cap);
	return cap;
}
