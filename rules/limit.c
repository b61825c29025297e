/*
 * limit.c - limit strings in Flask-Limiter notation ("100/day; 10 per hour;
 * 5 per 10 seconds") turned into rl_limit values, with the column and a
 * quoted, explained message for anything that is not one.
 *
 * Grammar of one item, whitespace (space, tab) allowed between any tokens:
 *
 *     item = count ( "/" | "per" ) [ n ] unit
 *     unit = second | minute | hour | day | month | year, each optionally
 *            followed by "s"; ASCII case-insensitive, like "per"
 *
 * Items are joined by ';', ',' or '|'.  As in Flask-Limiter a month is 30
 * days and a year is 12 such months (360 days), and the plural is accepted
 * whatever n is ("1 per 1 hours").  "per" must stand alone: it is followed
 * by whitespace, a digit or the end ("10 perhour" is an error).
 *
 * Choices, each an error with its own message (d->col is the 0-based byte
 * offset of the fault in s):
 *   - any byte outside printable ASCII and tab (NUL, CR, LF, UTF-8...): the
 *     string is measured by len, never by a NUL, and never read past len;
 *   - an empty string, or an empty item (leading, trailing or doubled
 *     separator): a stray separator usually means a limit was lost;
 *   - count 0 (use `exempt` instead), n 0, a count above RL_MAX_COUNT, a
 *     period above RL_MAX_PERIOD_MS; numbers are read saturating, so a long
 *     run of digits is "too large", never a wrapped value;
 *   - more than RL_MAX_LIMITS items, or an item longer than
 *     RL_LIMIT_TEXT_MAX - 1 bytes as written (trimmed);
 *   - two items with the same period ("10/hour; 100/60 minutes"): both
 *     would count the same hits, so one of them is certainly a mistake.
 * A period below one second cannot be written, so none is checked.
 *
 * Bandwidth limits ("10MB/minute; 100MB per day") are the same grammar
 * with a size (rl_size_parse) in place of the count; the size ends at the
 * '/' or at "per" (no size unit contains a 'p').  A limit of more than
 * RL_MAX_COUNT bytes is counted in KiB, or in MiB beyond RL_MAX_COUNT KiB
 * (struct rl_limit's unit), so that every strategy keeps its bounds.
 *
 * Sizes and durations of other directives (max-body, upstream-timeout) are
 * parsed here too, with the same kind of positioned messages.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define EXAMPLE "\"10/minute\""
#define BW_EXAMPLE "\"10MB/minute\""
#define SIZE_UNITS "B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)"
#define UNITS "second, minute, hour, day, month or year"

/* Digit runs are read saturating at this value, above every bound. */
#define SATURATED 1000000000000000000ULL

struct unit {
	const char *name;
	size_t len;
	uint64_t ms;
};

static const struct unit units[] = {
	{ "second", 6, 1000ULL },
	{ "minute", 6, 60ULL * 1000 },
	{ "hour", 4, 3600ULL * 1000 },
	{ "day", 3, 86400ULL * 1000 },
	{ "month", 5, 30ULL * 86400 * 1000 },
	{ "year", 4, 360ULL * 86400 * 1000 },
};

static int is_ws(char c)
{
	return c == ' ' || c == '\t';
}

static int is_sep(char c)
{
	return c == ';' || c == ',' || c == '|';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}


/* Read the digit run at t[*i..n) saturating at SATURATED. */
static uint64_t read_number(const char *t, size_t n, size_t *i)
{
	uint64_t v = 0;

	while (*i < n && is_digit(t[*i])) {
		if (v >= SATURATED / 10)
			v = SATURATED;
		else
			v = v * 10 + (uint64_t)(t[*i] - '0');
		(*i)++;
	}
	return v;
}

static size_t skip_ws(const char *t, size_t n, size_t i)
{
	while (i < n && is_ws(t[i]))
		i++;
	return i;
}

/* End of the run of non-whitespace bytes starting at i. */
static size_t word_end(const char *t, size_t n, size_t i)
{
	while (i < n && !is_ws(t[i]))
		i++;
	return i;
}

static const struct unit *find_unit(const char *w, size_t n)
{
	size_t u, k;

	for (u = 0; u < sizeof units / sizeof units[0]; u++) {
		size_t ul = units[u].len;

		if (n != ul && !(n == ul + 1 && lower(w[ul]) == 's'))
			continue;
		for (k = 0; k < ul; k++)
			if (lower(w[k]) != units[u].name[k])
				break;
		if (k == ul)
			return &units[u];
	}
	return NULL;
}

/* Parse one trimmed, non-empty item t[0..n) found at offset base of the
 * whole string. */
/* The size at the start of a bandwidth item: the bytes up to the '/' or
 * "per".  Sets *i past it and l->count / l->unit. */
static int parse_size_count(const char *t, size_t n, size_t base,
			    size_t *i, struct rl_limit *l, struct rl_diag *d)
{
	char q1[64];
	size_t j = 0, e;
	uint64_t bytes;

	while (j < n && t[j] != '/' && lower(t[j]) != 'p')
		j++;
	e = j;
	while (e > 0 && is_ws(t[e - 1]))
		e--;
	if (e == 0 || !is_digit(t[0]))
		return rl_fail(d, base, "bad bandwidth limit %s: expected a "
			    "size first, as in " BW_EXAMPLE,
			    rl_quote(q1, sizeof q1, t, n));
	if (rl_size_parse(t, e, &bytes, d) < 0) {
		if (d != NULL)
			d->col += base;
		return -1;
	}
	if (bytes == 0)
		return rl_fail(d, base, "bad bandwidth size %s: at least 1 byte "
			    "per period", rl_quote(q1, sizeof q1, t, e));
	if (bytes > RL_MAX_BANDWIDTH)
		return rl_fail(d, base, "bad bandwidth size %s: at most %lluM "
			    "per period", rl_quote(q1, sizeof q1, t, e),
			    (unsigned long long)RL_MAX_COUNT);
	l->unit = 1;
	while (bytes / l->unit > RL_MAX_COUNT)
		l->unit <<= 10;
	l->count = bytes / l->unit;
	*i = j;
	return 0;
}

static int parse_item(const char *t, size_t n, size_t base, int sizes,
		      struct rl_limit *l, struct rl_diag *d)
{
	char q1[64], q2[64];
	size_t i = 0, cend = 0, nstart, nend, ustart, uend;
	uint64_t count, mult = 1;
	const struct unit *u;
	const char *ex = sizes ? BW_EXAMPLE : EXAMPLE;

	l->unit = 0;
	if (sizes) {
		if (parse_size_count(t, n, base, &i, l, d) < 0)
			return -1;
		count = l->count;
	} else {
		if (!is_digit(t[0]))
			return rl_fail(d, base, "bad limit %s: expected a count "
				    "first, as in " EXAMPLE,
				    rl_quote(q1, sizeof q1, t, n));
		count = read_number(t, n, &i);
		cend = i;
		if (count > RL_MAX_COUNT)
			return rl_fail(d, base, "bad limit count %s: at most "
				    "%llu hits per period",
				    rl_quote(q1, sizeof q1, t, cend),
				    (unsigned long long)RL_MAX_COUNT);
	}

	i = skip_ws(t, n, i);
	if (i == n)
		return rl_fail(d, base + n, "incomplete limit %s: expected \"/\" "
			    "or \"per\" and a unit, as in %s",
			    rl_quote(q1, sizeof q1, t, n), ex);
	if (t[i] == '/') {
		i++;
	} else if (n - i >= 3 && lower(t[i]) == 'p' && lower(t[i + 1]) == 'e'
		   && lower(t[i + 2]) == 'r'
		   && (n - i == 3 || is_ws(t[i + 3]) || is_digit(t[i + 3]))) {
		i += 3;
	} else {
		size_t e = word_end(t, n, i);

		return rl_fail(d, base + i, "bad limit %s: expected \"/\" or "
			    "\"per\" after the %s, found %s",
			    rl_quote(q1, sizeof q1, t, n),
			    sizes ? "size" : "count",
			    rl_quote(q2, sizeof q2, t + i, e - i));
	}
	/* A count of 0 once the separator is known, so that "0x10/hour"
	 * is junk after the count rather than a count of 0. */
	if (!sizes && count == 0)
		return rl_fail(d, base, "bad limit count %s: count must "
			    "be at least 1; use `exempt` to lift limits",
			    rl_quote(q1, sizeof q1, t, cend));

	i = skip_ws(t, n, i);
	nstart = i;
	if (i < n && is_digit(t[i])) {
		mult = read_number(t, n, &i);
		if (mult == 0)
			return rl_fail(d, base + nstart, "bad limit period %s: "
				    "the number of units must be at least 1",
				    rl_quote(q1, sizeof q1, t + nstart,
					  i - nstart));
	}
	nend = i;

	i = skip_ws(t, n, i);
	ustart = i;
	uend = word_end(t, n, i);
	if (ustart == uend)
		return rl_fail(d, base + n, "incomplete limit %s: expected a "
			    "unit (" UNITS ")", rl_quote(q1, sizeof q1, t, n));
	u = find_unit(t + ustart, uend - ustart);
	if (u == NULL)
		return rl_fail(d, base + ustart, "bad limit unit %s: expected "
			    UNITS, rl_quote(q1, sizeof q1, t + ustart,
					 uend - ustart));
	if (mult > RL_MAX_PERIOD_MS / u->ms)
		return rl_fail(d, base + (nend > nstart ? nstart : ustart),
			    "bad limit period %s: at most 100 years "
			    "(36000 days)", rl_quote(q1, sizeof q1, t + nstart,
						  uend - nstart));

	i = skip_ws(t, n, uend);
	if (i < n)
		return rl_fail(d, base + i, "unexpected %s after limit %s: "
			    "expected \";\", \",\" or \"|\" between limits",
			    rl_quote(q1, sizeof q1, t + i, word_end(t, n, i) - i),
			    rl_quote(q2, sizeof q2, t, uend));

	l->count = count;
	l->period_ms = mult * u->ms;
	memcpy(l->text, t, n);
	l->text[n] = '\0';
	return 0;
}

static int parse_list(const char *s, size_t len, int sizes,
		      struct rl_limit *out, size_t *n, struct rl_diag *d)
{
	char q1[64], q2[64];
	size_t i, pos = 0, nitems = 0;
	const char *ex = sizes ? BW_EXAMPLE : EXAMPLE;

	if (n != NULL)
		*n = 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\t') || c > 0x7e)
			return rl_fail(d, i, "bad byte \"\\x%02x\" in limit "
				    "string: expected printable ASCII", c);
	}
	if (skip_ws(s, len, 0) == len)
		return rl_fail(d, 0, "empty limit string: expected a limit such "
			    "as %s", ex);

	for (;;) {
		size_t sep = pos, a, b, k;

		while (sep < len && !is_sep(s[sep]))
			sep++;
		a = skip_ws(s, sep, pos);
		b = sep;
		while (b > a && is_ws(s[b - 1]))
			b--;
		if (a == b) {
			if (sep < len)
				return rl_fail(d, sep, "empty limit before "
					    "\"%c\": expected a limit such as "
					    "%s", s[sep], ex);
			return rl_fail(d, pos - 1, "empty limit after \"%c\": "
				    "expected a limit such as %s",
				    s[pos - 1], ex);
		}
		if (nitems == RL_MAX_LIMITS)
			return rl_fail(d, a, "too many limits at %s: at most %d "
				    "in one limit string",
				    rl_quote(q1, sizeof q1, s + a, b - a),
				    RL_MAX_LIMITS);
		if (b - a > RL_LIMIT_TEXT_MAX - 1)
			return rl_fail(d, a, "limit %s is too long: at most %d "
				    "bytes", rl_quote(q1, sizeof q1, s + a, b - a),
				    RL_LIMIT_TEXT_MAX - 1);
		if (parse_item(s + a, b - a, a, sizes, &out[nitems], d) < 0)
			return -1;
		for (k = 0; k < nitems; k++)
			if (out[k].period_ms == out[nitems].period_ms)
				return rl_fail(d, a, "duplicate limit %s: same "
					    "period as %s; both would count "
					    "the same hits",
					    rl_quote(q1, sizeof q1, s + a, b - a),
					    rl_quote(q2, sizeof q2, out[k].text,
						  strlen(out[k].text)));
		nitems++;
		if (sep == len)
			break;
		pos = sep + 1;
	}
	if (n != NULL)
		*n = nitems;
	return 0;
}

int rl_limits_parse(const char *s, size_t len, struct rl_limit *out,
		    size_t *n, struct rl_diag *d)
{
	return parse_list(s, len, 0, out, n, d);
}

int rl_bandwidth_parse(const char *s, size_t len, struct rl_limit *out,
		       size_t *n, struct rl_diag *d)
{
	return parse_list(s, len, 1, out, n, d);
}

/* ------------------------------------------------------------------ */
/* Sizes and durations                                                 */

struct mult {
	const char *name;
	uint64_t by;
};

static const struct mult size_units[] = {
	{ "b", 1 },
	{ "k", 1ULL << 10 }, { "kb", 1ULL << 10 }, { "kib", 1ULL << 10 },
	{ "m", 1ULL << 20 }, { "mb", 1ULL << 20 }, { "mib", 1ULL << 20 },
	{ "g", 1ULL << 30 }, { "gb", 1ULL << 30 }, { "gib", 1ULL << 30 },
};

static const struct mult duration_units[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
};

static const struct mult *find_mult(const struct mult *m, size_t nm,
				    const char *w, size_t n)
{
	for (size_t u = 0; u < nm; u++) {
		size_t k, ul = strlen(m[u].name);

		if (ul != n)
			continue;
		for (k = 0; k < n && lower(w[k]) == m[u].name[k]; k++)
			;
		if (k == n)
			return &m[u];
	}
	return NULL;
}

/* NUMBER [ws] [UNIT] with spaces around: the shared part of sizes and
 * durations.  what names the value in messages ("size", "duration"). */
static int parse_quantity(const char *s, size_t len, const char *what,
			  const struct mult *m, size_t nm,
			  uint64_t bare, uint64_t max, const char *max_text,
			  const char *unit_names, const char *fraction_hint,
			  uint64_t *out,
			  struct rl_diag *d)
{
	char q1[64], q2[64];
	size_t i, start, nend, ustart, uend;
	uint64_t v, by = bare;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\t') || c > 0x7e)
			return rl_fail(d, i, "bad byte \"\\x%02x\" in a %s: "
				    "expected printable ASCII", c, what);
	}
	start = skip_ws(s, len, 0);
	if (start == len)
		return rl_fail(d, 0, "empty %s: expected a number with an "
			    "optional unit (%s)", what, unit_names);
	if (!is_digit(s[start]))
		return rl_fail(d, start, "bad %s %s: expected a number with an "
			    "optional unit (%s)", what,
			    rl_quote(q1, sizeof q1, s + start, len - start),
			    unit_names);
	i = start;
	v = read_number(s, len, &i);
	nend = i;
	if (i < len && (s[i] == '.' || s[i] == ','))
		return rl_fail(d, i, "bad %s %s: fractions are not supported "
			    "(%s)", what,
			    rl_quote(q1, sizeof q1, s + start,
				  word_end(s, len, start) - start),
			    fraction_hint);
	ustart = skip_ws(s, len, i);
	uend = word_end(s, len, ustart);
	if (uend > ustart) {
		const struct mult *u = find_mult(m, nm, s + ustart,
						 uend - ustart);
		if (u == NULL)
			return rl_fail(d, ustart, "bad %s unit %s: expected %s",
				    what, rl_quote(q1, sizeof q1, s + ustart,
						   uend - ustart), unit_names);
		by = u->by;
	}
	i = skip_ws(s, len, uend);
	if (i < len)
		return rl_fail(d, i, "unexpected %s after the %s %s", rl_quote(
				    q1, sizeof q1, s + i, word_end(s, len, i) - i),
			    what, rl_quote(q2, sizeof q2, s + start,
					   uend - start));
	if (v > max / by)
		return rl_fail(d, start, "%s %s is too large: at most %s", what,
			    rl_quote(q1, sizeof q1, s + start,
				  (uend > ustart ? uend : nend) - start),
			    max_text);
	*out = v * by;
	return 0;
}

int rl_size_parse(const char *s, size_t len, uint64_t *bytes,
		  struct rl_diag *d)
{
	return parse_quantity(s, len, "size", size_units,
			      sizeof size_units / sizeof size_units[0], 1,
			      RL_SIZE_MAX, "1048576G (1 PiB)", SIZE_UNITS,
			      "write 1536K rather than 1.5M", bytes, d);
}

int rl_duration_parse(const char *s, size_t len, int64_t *ms,
		      struct rl_diag *d)
{
	uint64_t v;

	if (parse_quantity(s, len, "duration", duration_units,
			   sizeof duration_units / sizeof duration_units[0],
			   1000, (uint64_t)RL_DURATION_MAX_MS, "100 years",
			   "ms, s, m or h; a bare number is seconds",
			   "write 1500ms rather than 1.5s", &v, d) < 0)
		return -1;
	*ms = (int64_t)v;
	return 0;
}
