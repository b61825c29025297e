/*
 * fuzz_path.c - libFuzzer target for path normalisation and patterns.  The
 * input is split at its first NUL byte into a pattern and a raw path (no
 * NUL: all of it is both); the first byte's low bit chooses case folding.
 * Matching is compared with a plain dynamic-programming reference.
 * Checks: out_len <= len, the result starts with '/', has no "//", no "."
 * or ".." segment, a ';' only in a segment whose name before it is empty,
 * "." or "..", no trailing '/', and normalising it again
 * changes nothing (when no '%' is left to decode again); a compiled pattern matches its own text when it has no
 * wildcard and is not flagged never; matching never crashes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_normalised(const char *p, size_t n)
{
	size_t i;

	if (n == 0 || p[0] != '/' || p[n] != '\0')
		abort();
	if (n > 1 && p[n - 1] == '/')
		abort();
	for (i = 0; i < n; i++) {
		if (p[i] == '\0')
			abort();
		if (p[i] == '/') {
			/* a ';' stays only after an empty, "." or ".." name */
			const char *semi = memchr(p + i + 1, ';', n - i - 1);
			const char *next = memchr(p + i + 1, '/', n - i - 1);
			if (semi != NULL && (next == NULL || semi < next)) {
				size_t k = (size_t)(semi - (p + i + 1));
				if (!(k == 0 || (k == 1 && p[i + 1] == '.') ||
				      (k == 2 && p[i + 1] == '.' && p[i + 2] == '.')))
					abort();
			}
		}
		if (p[i] != '/')
			continue;
		if (i + 1 < n && p[i + 1] == '/')
			abort();
		if (i + 1 < n && p[i + 1] == '.'
		    && (i + 2 == n || p[i + 2] == '/'
			|| (p[i + 2] == '.' && (i + 3 == n || p[i + 3] == '/'))))
			abort();
	}
}


/* Reference matcher for small inputs: dynamic programming over segments
 * and, inside a segment, over bytes; slow but plainly right. */
#define REF_SEGS 32
#define REF_SEG_LEN 32

static int ref_split(const char *s, size_t n, const char **seg, size_t *len)
{
	size_t i, start = 1, k = 0;

	if (n == 0 || s[0] != '/')
		return -1;
	if (n == 1)
		return 0;
	for (i = 1; i <= n; i++) {
		if (i < n && s[i] != '/')
			continue;
		if (k == REF_SEGS || i - start > REF_SEG_LEN)
			return -1;
		seg[k] = s + start;
		len[k++] = i - start;
		start = i + 1;
	}
	return (int)k;
}

static int ref_seg(const char *p, size_t pn, const char *t, size_t tn)
{
	unsigned char dp[REF_SEG_LEN + 2][REF_SEG_LEN + 2];
	size_t i, j;

	for (i = pn + 1; i-- > 0;)
		for (j = tn + 1; j-- > 0;) {
			if (i == pn)
				dp[i][j] = j == tn;
			else if (p[i] == '*')
				dp[i][j] = dp[i + 1][j]
					   || (j < tn && dp[i][j + 1]);
			else
				dp[i][j] = j < tn && p[i] == t[j]
					   && dp[i + 1][j + 1];
		}
	return dp[0][0];
}

/* 1 or 0, or -1 when the input is too large for the reference. */
static int ref_match(const char *p, size_t pn, const char *t, size_t tn)
{
	const char *ps[REF_SEGS], *ts[REF_SEGS];
	size_t pl[REF_SEGS], tl[REF_SEGS];
	unsigned char dp[REF_SEGS + 1][REF_SEGS + 1];
	int np = ref_split(p, pn, ps, pl), nt = ref_split(t, tn, ts, tl);
	int i, j;

	if (np < 0 || nt < 0)
		return -1;
	for (i = np; i >= 0; i--)
		for (j = nt; j >= 0; j--) {
			if (i == np)
				dp[i][j] = j == nt;
			else if (pl[i] == 2 && ps[i][0] == '*'
				 && ps[i][1] == '*')
				dp[i][j] = dp[i + 1][j]
					   || (j < nt && dp[i][j + 1]);
			else
				dp[i][j] = j < nt
					   && ref_seg(ps[i], pl[i], ts[j],
						      tl[j])
					   && dp[i + 1][j + 1];
		}
	return dp[0][0];
}

static void check_match(const struct rl_pattern *p, const char *t, size_t n)
{
	int got = rl_pattern_match(p, t, n);
	int want = ref_match(p->text, p->len, t, n);

	if (got != 0 && got != 1)
		abort();
	if (want >= 0 && got != want)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nul = memchr(data, '\0', size);
	size_t plen = nul != NULL ? (size_t)(nul - (const char *)data) : size;
	const char *rest = nul != NULL ? nul + 1 : (const char *)data;
	size_t rlen = nul != NULL ? size - plen - 1 : size;
	int fold = size > 0 && (data[0] & 1);
	char *pat = malloc(plen + 1), *path = malloc(rlen + 1);
	char *buf = malloc(plen + 1), *out = malloc(rlen + 1);
	char *out2 = malloc(rlen + 1);
	struct rl_pattern p;
	struct rl_diag d;
	size_t olen = 0, olen2 = 0;
	int never = 0, have_pat, have_path;

	memcpy(pat, data, plen);
	memcpy(path, rest, rlen);

	have_path = rl_path_normalize(path, rlen, fold, out, &olen, &d) == 0;
	if (have_path) {
		if (olen > rlen)
			abort();
		check_normalised(out, olen);
		/* Normalising is idempotent, except that it decodes once
		 * more: a '%' left by the first decode ("%2525") may be read
		 * as an escape again. */
		if (memchr(out, '%', olen) == NULL
		    && (rl_path_normalize(out, olen, fold, out2, &olen2,
					  &d) != 0
			|| olen2 != olen || memcmp(out, out2, olen) != 0))
			abort();
	} else if (d.col > rlen && !(rlen > RL_PATH_MAX
				     && d.col == RL_PATH_MAX)) {
		abort();
	}

	have_pat = rl_pattern_compile(pat, plen, fold, &p, buf, &never,
				      &d) == 0;
	if (have_pat) {
		if (p.len != plen || p.literal_prefix > p.len
		    || p.literal_chars > p.len || p.wildcards > 16
		    || (p.exact != (p.wildcards == 0)))
			abort();
		if (p.exact && !never
		    && rl_pattern_match(&p, p.text, p.len) != 1)
			abort();
		if (have_path)
			check_match(&p, out, olen);
		check_match(&p, path, rlen);
	}
	free(pat);
	free(path);
	free(buf);
	free(out);
	free(out2);
	return 0;
}
