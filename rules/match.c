/*
 * match.c - request paths and path patterns: normalise a raw request path
 * so that every spelling of one resource ("//login", "/x/../login",
 * "/%6cogin", "/login;x=1", "/login/") reaches the same rule, compile a rule
 * pattern, and match a normalised path against it.
 *
 * Normalisation order matters for bypasses: the path is percent-decoded
 * once first, so an encoded '/', '.' or ';' acts like the plain byte
 * ("/a/%2e%2e/b" is "/b", "/a%2Fb" is "/a/b", "/login%3Bx" is "/login");
 * a second layer of encoding stays literal ("%252e" is "%2e").  A NUL byte,
 * raw or decoded, is an error: the result is a C string.  Other bytes
 * (controls, UTF-8) are kept as they are.  Then each segment loses its
 * ";params", empty segments vanish, "." and ".." are resolved as in RFC 3986
 * 5.2.4 (never above the root), and case is folded when asked.
 *
 * Patterns: '*' matches any run of bytes inside one segment, a whole "**"
 * segment matches zero or more segments.  Matching goes segment by segment:
 * "**" is the star of the classic two-pointer wildcard algorithm over
 * segments, and '*' the star of the same algorithm over the bytes of one
 * segment, so the cost is at most proportional to pattern size times path
 * size, never exponential.
 *
 * A pattern that is not itself in normalised form ("/a//b", "/a/./b",
 * "/a/", "/a;x", "/a%20b") or that holds '?' or '#' (a query or fragment is
 * never part of the path) is accepted with *never set so the caller can
 * warn.  It is matched literally: a path with an encoded '?', '#' or '%'
 * could still reach it, the others never.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Wildcard tokens ('*' or a "**" segment) allowed in one pattern; bounds
 * the matcher's backtracking. */
#define MATCH_MAX_WILDCARDS 16

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* 1 for the segment name ".", 2 for "..", else 0. */
static int dot_name(const char *p, size_t n)
{
	if (n == 0 || n > 2 || p[0] != '.')
		return 0;
	return n == 1 ? 1 : p[1] == '.' ? 2 : 0;
}

static int is_globstar(const char *s, size_t a, size_t e)
{
	return e - a == 2 && s[a] == '*' && s[a + 1] == '*';
}

/* Bytes already_normal looks at twice: class 1 always ('%', ';', NUL and
 * '/', whose next byte matters), class 2 when case is folded (upper
 * case). */
static const unsigned char path_class[256] = {
	[0] = 1, ['%'] = 1, [';'] = 1, ['/'] = 1,
	['A'] = 2, ['B'] = 2, ['C'] = 2, ['D'] = 2, ['E'] = 2, ['F'] = 2,
	['G'] = 2, ['H'] = 2, ['I'] = 2, ['J'] = 2, ['K'] = 2, ['L'] = 2,
	['M'] = 2, ['N'] = 2, ['O'] = 2, ['P'] = 2, ['Q'] = 2, ['R'] = 2,
	['S'] = 2, ['T'] = 2, ['U'] = 2, ['V'] = 2, ['W'] = 2, ['X'] = 2,
	['Y'] = 2, ['Z'] = 2,
};

/* Is the path (starting with '/') already in normal form?  Then
 * normalising is a copy, which is the common case on the request path.
 * Anything unusual (a '%', ';', NUL, "//", a dot segment, a trailing '/',
 * an upper-case byte when folding case) takes the full route below. */
static int already_normal(const char *s, size_t len, int fold_case)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + len;
	unsigned mask = fold_case ? 3 : 1;

	if (len > 1 && s[len - 1] == '/')
		return 0;
	while (p < e) {
		unsigned c = *p++;

		if (!(path_class[c] & mask))
			continue;
		if (c != '/')
			return 0;
		/* p is the byte after the '/': another '/', or a "." or
		 * ".." segment */
		if (p < e && (*p == '/' ||
			      (*p == '.' && (p + 1 == e || p[1] == '/' ||
					     (p[1] == '.' &&
					      (p + 2 == e || p[2] == '/'))))))
			return 0;
	}
	return 1;
}

int rl_path_normalize(const char *in, size_t len, int fold_case,
		      char *out, size_t *out_len, struct rl_diag *d)
{
	char q[200];
	size_t i, o = 0, r, w;

	if (len == 0)
		return rl_fail(d, 0, "empty path: expected a path starting "
			    "with '/'");
	if (len > RL_PATH_MAX)
		return rl_fail(d, RL_PATH_MAX, "path is too long: %zu bytes, at "
			    "most %d", len, RL_PATH_MAX);
	if (in[0] != '/')
		return rl_fail(d, 0, "bad path %s: a path starts with '/'",
			    rl_quote(q, sizeof q, in, len));

	if (already_normal(in, len, fold_case)) {
		memcpy(out, in, len);
		out[len] = '\0';
		*out_len = len;
		return 0;
	}

	/* Decode once into out; o never passes i, so out needs len + 1. */
	int enc_slash = 0;

	for (i = 0; i < len; i++) {
		char c = in[i];

		if (c == '%') {
			int hi = i + 2 < len ? rl_hex_value((unsigned char)in[i + 1]) : -1;
			int lo = hi >= 0 ? rl_hex_value((unsigned char)in[i + 2]) : -1;

			if (lo < 0)
				return rl_fail(d, i, "bad path escape %s: "
					    "expected '%%' and two hex digits",
					    rl_quote(q, sizeof q, in + i,
						  len - i < 3 ? len - i : 3));
			c = (char)(hi * 16 + lo);
			if (c == '\0')
				return rl_fail(d, i, "bad path escape %s: it "
					    "decodes to a NUL byte",
					    rl_quote(q, sizeof q, in + i, 3));
			enc_slash |= c == '/';
			i += 2;
		} else if (c == '\0') {
			return rl_fail(d, i, "bad path %s: a path cannot contain "
				    "a NUL byte", rl_quote(q, sizeof q, in, len));
		}
		out[o++] = fold_case ? lower(c) : c;
	}

	/* Resolve segments in place: w (write) never passes r (read), since
	 * each kept segment is written with at most the '/' it was read
	 * with.
	 *
	 * A dot segment is a whole segment "." or "..": lighttpd, Apache and
	 * nginx read "..;", ".;x" and ";x" as names (a script gets them in
	 * PATH_INFO; a ".." after them removes them), so they are kept as
	 * written.  Any other segment loses its ";parameters" (servlet
	 * style: "/login;jsessionid=1" is "/login"); a server that does not
	 * strip them finds no such file, so this only ever counts more. */
	int dots = 0;

	r = 0;
	w = 0;
	while (r < o) {
		size_t s, e, k;

		while (r < o && out[r] == '/')
			r++;
		s = r;
		while (r < o && out[r] != '/')
			r++;
		if (r == s)
			continue;
		int dot = dot_name(out + s, r - s);
		if (dot) {
			dots = 1;
			if (dot == 2)
				while (w > 0 && out[--w] != '/')
					;
			continue;
		}
		e = s;
		while (e < r && out[e] != ';')
			e++;
		if (e == s || dot_name(out + s, e - s))
			e = r;
		out[w++] = '/';
		for (k = s; k < e; k++)
			out[w++] = out[k];
	}
	/* "%2F" with a dot segment: nginx decodes it before it resolves "..",
	 * Apache after ("/a.cgi/%2F/.." runs a.cgi there, and is "/" to
	 * nginx), so no one reading is safe for both */
	if (enc_slash && dots)
		return rl_fail(d, 0, "ambiguous path %s: an encoded '/' (%%2F) "
			    "with a \".\" or \"..\" segment, which web servers "
			    "resolve differently", rl_quote(q, sizeof q, in, len));
	if (w == 0)
		out[w++] = '/';
	out[w] = '\0';
	*out_len = w;
	return 0;
}

int rl_path_view(const char *in, size_t len, int fold_case, char *buf,
		 const char **out, size_t *out_len, struct rl_diag *d)
{
	if (len > 0 && len <= RL_PATH_MAX && in[0] == '/' &&
	    already_normal(in, len, fold_case)) {
		*out = in;
		*out_len = len;
		return 0;
	}
	*out = buf;
	return rl_path_normalize(in, len, fold_case, buf, out_len, d);
}

int rl_pattern_compile(const char *s, size_t len, int fold_case,
		       struct rl_pattern *p, char *buf, int *never,
		       struct rl_diag *d)
{
	char q[200];
	size_t i, first_star = len, stars = 0;
	unsigned wildcards = 0, globstars = 0;
	int nev = 0, enc = 0;

	if (never != NULL)
		*never = 0;
	if (len == 0)
		return rl_fail(d, 0, "empty path pattern: expected a path such "
			    "as \"/login\"");
	if (len > RL_PATH_MAX)
		return rl_fail(d, RL_PATH_MAX, "path pattern is too long: %zu "
			    "bytes, at most %d", len, RL_PATH_MAX);
	if (s[0] != '/')
		return rl_fail(d, 0, "bad path pattern %s: a pattern starts "
			    "with '/'", rl_quote(q, sizeof q, s, len));

	for (i = 1;; i++) {
		size_t a = i, e = i, k;
		int semi = 0;

		while (e < len && s[e] != '/')
			e++;
		if (is_globstar(s, a, e)) {
			if (++wildcards > MATCH_MAX_WILDCARDS)
				return rl_fail(d, a, "bad path pattern %s: more "
					    "than %d wildcards",
					    rl_quote(q, sizeof q, s, len),
					    MATCH_MAX_WILDCARDS);
			if (first_star == len)
				first_star = a;
			stars += 2;
			globstars++;
			k = e;
		} else {
			k = a;
		}
		for (; k < e; k++) {
			char c = s[k];

			if (c == '\0')
				return rl_fail(d, k, "bad path pattern %s: a "
					    "pattern cannot contain a NUL "
					    "byte", rl_quote(q, sizeof q, s, len));
			/* ';' starts a parameter, dropped from a segment
			 * unless what comes before it is empty, "." or
			 * "..": only such a segment keeps a ';' (see
			 * rl_path_normalize); '?', '#' and '%' can only
			 * come from an escape (%3F, %23, %25) */
			if (c == ';' && !semi) {
				/* never, unless the name before it may be
				 * empty, "." or "..": only '*' and '.' */
				semi = 1;
				for (size_t j = a; j < k; j++)
					if (s[j] != '*' && s[j] != '.')
						nev = 1;
			} else if (c == '?' || c == '#' || c == '%')
				enc = 1;
			if (c != '*')
				continue;
			if (k + 1 < e && s[k + 1] == '*')
				return rl_fail(d, k, "bad path pattern %s: \"**\" "
					    "must be a whole segment, as in "
					    "\"/api/**\"",
					    rl_quote(q, sizeof q, s, len));
			if (++wildcards > MATCH_MAX_WILDCARDS)
				return rl_fail(d, k, "bad path pattern %s: more "
					    "than %d wildcards",
					    rl_quote(q, sizeof q, s, len),
					    MATCH_MAX_WILDCARDS);
			if (first_star == len)
				first_star = k;
			stars++;
		}
		/* Normalised paths have no empty, "." or ".." segment; the
		 * root "/" alone is the one empty path. */
		if (len > 1 && (e == a || dot_name(s + a, e - a)))
			nev = 1;
		if (e == len)
			break;
		i = e;
	}

	for (i = 0; i < len; i++)
		buf[i] = fold_case ? lower(s[i]) : s[i];
	buf[len] = '\0';
	p->text = buf;
	p->len = len;
	p->exact = wildcards == 0;
	p->literal_prefix = first_star;
	p->literal_chars = len - stars;
	p->wildcards = wildcards;
	p->globstars = globstars;
	p->subtree = wildcards == 1 && len >= 3 && first_star == len - 2 &&
		     memcmp(buf + len - 3, "/**", 3) == 0 &&
		     (len == 3 || buf[len - 4] != '/');
	if (never != NULL)
		*never = nev ? RL_PAT_NEVER : enc ? RL_PAT_ENCODED : RL_PAT_OK;
	return 0;
}

/* First segment of a path or pattern s[0..len) starting with '/': its start
 * offset, or len + 1 (past the end) when there is none ("/" has none). */
static size_t seg_first(size_t len)
{
	return len <= 1 ? len + 1 : 1;
}

static size_t seg_end(const char *s, size_t len, size_t start)
{
	const char *slash = memchr(s + start, '/', len - start);

	return slash != NULL ? (size_t)(slash - s) : len;
}

/* Does the pattern segment p[0..pn) ('*' = any run of bytes) match the
 * segment t[0..tn)?  Two pointers with one backtrack point: when a later
 * '*' is reached the earlier one never needs to absorb more. */
static int seg_glob(const char *p, size_t pn, const char *t, size_t tn)
{
	size_t pi = 0, ti = 0, star_p = 0, star_t = 0;
	int star = 0;

	while (ti < tn) {
		if (pi < pn && p[pi] == '*') {
			star = 1;
			star_p = ++pi;
			star_t = ti;
		} else if (pi < pn && p[pi] == t[ti]) {
			pi++;
			ti++;
		} else if (star) {
			pi = star_p;
			ti = ++star_t;
		} else {
			return 0;
		}
	}
	while (pi < pn && p[pi] == '*')
		pi++;
	return pi == pn;
}

int rl_pattern_match(const struct rl_pattern *p, const char *path,
		     size_t len)
{
	const char *pat;
	size_t plen, pi, ti, star_p = 0, star_t = 0;
	int star = 0;

	if (p == NULL || p->text == NULL || len == 0 || path[0] != '/')
		return 0;
	pat = p->text;
	plen = p->len;
	if (p->exact)
		return len == plen && memcmp(pat, path, len) == 0;
	/* A plain subtree ("/api" + a final "**" segment), the most common
	 * wildcard rule: a prefix test. */
	if (p->subtree) {
		size_t pre = plen - 3;
		return (len == pre && memcmp(path, pat, pre) == 0) ||
		       (len > pre && path[pre] == '/' &&
			memcmp(path, pat, pre) == 0);
	}

	/* Two pointers over segments: "**" is the star, any other pattern
	 * segment matches exactly one path segment through seg_glob. */
	pi = seg_first(plen);
	ti = seg_first(len);
	while (ti <= len) {
		if (pi <= plen) {
			size_t pe = seg_end(pat, plen, pi), te;

			if (is_globstar(pat, pi, pe)) {
				star = 1;
				pi = star_p = pe + 1;
				star_t = ti;
				continue;
			}
			te = seg_end(path, len, ti);
			if (seg_glob(pat + pi, pe - pi, path + ti, te - ti)) {
				pi = pe + 1;
				ti = te + 1;
				continue;
			}
		}
		if (!star)
			return 0;
		star_t = seg_end(path, len, star_t) + 1;
		ti = star_t;
		pi = star_p;
	}
	while (pi <= plen) {
		size_t pe = seg_end(pat, plen, pi);

		if (!is_globstar(pat, pi, pe))
			return 0;
		pi = pe + 1;
	}
	return 1;
}
