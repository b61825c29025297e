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
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define EXAMPLE "\"10/minute\""
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
static int parse_item(const char *t, size_t n, size_t base,
		      struct rl_limit *l, struct rl_diag *d)
{
	char q1[64], q2[64];
	size_t i = 0, cend, nstart, nend, ustart, uend;
	uint64_t count, mult = 1;
	const struct unit *u;

	if (!is_digit(t[0]))
		return rl_fail(d, base, "bad limit %s: expected a count first, "
			    "as in " EXAMPLE, rl_quote(q1, sizeof q1, t, n));
	count = read_number(t, n, &i);
	cend = i;
	if (count == 0)
		return rl_fail(d, base, "bad limit count %s: count must be at "
			    "least 1; use `exempt` to lift limits",
			    rl_quote(q1, sizeof q1, t, cend));
	if (count > RL_MAX_COUNT)
		return rl_fail(d, base, "bad limit count %s: at most %llu hits "
			    "per period", rl_quote(q1, sizeof q1, t, cend),
			    (unsigned long long)RL_MAX_COUNT);

	i = skip_ws(t, n, i);
	if (i == n)
		return rl_fail(d, base + n, "incomplete limit %s: expected \"/\" "
			    "or \"per\" and a unit, as in " EXAMPLE,
			    rl_quote(q1, sizeof q1, t, n));
	if (t[i] == '/') {
		i++;
	} else if (n - i >= 3 && lower(t[i]) == 'p' && lower(t[i + 1]) == 'e'
		   && lower(t[i + 2]) == 'r'
		   && (n - i == 3 || is_ws(t[i + 3]) || is_digit(t[i + 3]))) {
		i += 3;
	} else {
		size_t e = word_end(t, n, i);

		return rl_fail(d, base + i, "bad limit %s: expected \"/\" or "
			    "\"per\" after the count, found %s",
			    rl_quote(q1, sizeof q1, t, n),
			    rl_quote(q2, sizeof q2, t + i, e - i));
	}

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

int rl_limits_parse(const char *s, size_t len, struct rl_limit *out,
		    size_t *n, struct rl_diag *d)
{
	char q1[64], q2[64];
	size_t i, pos = 0, nitems = 0;

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
			    "as " EXAMPLE);

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
					    EXAMPLE, s[sep]);
			return rl_fail(d, pos - 1, "empty limit after \"%c\": "
				    "expected a limit such as " EXAMPLE,
				    s[pos - 1]);
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
		if (parse_item(s + a, b - a, a, &out[nitems], d) < 0)
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
