/*
 * test_limit.c - rl_limits_parse: every accepted form of a limit string
 * (Flask-Limiter notation) with the exact count, period in milliseconds and
 * text kept, and every kind of error with its exact message and column.
 * Cases live in tables; a failing case reports its table line.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "rules.h"

#define SEC 1000ULL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define MONTH (30 * DAY)
#define YEAR (12 * MONTH)

/* 56 spaces: "10" PAD56 "/hour" is 63 bytes, the longest item */
#define PAD56 "                                                        "

struct good_case {
	int line;
	const char *s;
	size_t n;
	struct {
		uint64_t count;
		uint64_t period_ms;
		const char *text;
	} l[RL_MAX_LIMITS];
};

static const struct good_case good[] = {
	{ __LINE__, "10/hour", 1, { { 10, HOUR, "10/hour" } } },
	{ __LINE__, "10 per hour", 1, { { 10, HOUR, "10 per hour" } } },
	{ __LINE__, "10 PER Hour", 1, { { 10, HOUR, "10 PER Hour" } } },
	{ __LINE__, "10per hour", 1, { { 10, HOUR, "10per hour" } } },
	{ __LINE__, "10 per10 seconds", 1,
	  { { 10, 10 * SEC, "10 per10 seconds" } } },
	{ __LINE__, "10/HOURS", 1, { { 10, HOUR, "10/HOURS" } } },
	{ __LINE__, "1/second", 1, { { 1, SEC, "1/second" } } },
	{ __LINE__, "1/seconds", 1, { { 1, SEC, "1/seconds" } } },
	{ __LINE__, "2/minute", 1, { { 2, MIN, "2/minute" } } },
	{ __LINE__, "2/minutes", 1, { { 2, MIN, "2/minutes" } } },
	{ __LINE__, "3/day", 1, { { 3, DAY, "3/day" } } },
	{ __LINE__, "3/month", 1, { { 3, MONTH, "3/month" } } },
	{ __LINE__, "3/months", 1, { { 3, MONTH, "3/months" } } },
	{ __LINE__, "4/year", 1, { { 4, YEAR, "4/year" } } },
	{ __LINE__, "4 per 2 years", 1, { { 4, 2 * YEAR, "4 per 2 years" } } },
	{ __LINE__, "1 per 1 hours", 1, { { 1, HOUR, "1 per 1 hours" } } },
	{ __LINE__, "5 per 10 seconds", 1,
	  { { 5, 10 * SEC, "5 per 10 seconds" } } },
	{ __LINE__, "10/7 days", 1, { { 10, 7 * DAY, "10/7 days" } } },
	{ __LINE__, "10/07days", 1, { { 10, 7 * DAY, "10/07days" } } },
	{ __LINE__, "010/hour", 1, { { 10, HOUR, "010/hour" } } },
	{ __LINE__, "100/day;10/hour;1/minute", 3,
	  { { 100, DAY, "100/day" }, { 10, HOUR, "10/hour" },
	    { 1, MIN, "1/minute" } } },
	{ __LINE__, "100/day, 500/7days", 2,
	  { { 100, DAY, "100/day" }, { 500, 7 * DAY, "500/7days" } } },
	{ __LINE__, "  10/hour  |  20/day  ", 2,
	  { { 10, HOUR, "10/hour" }, { 20, DAY, "20/day" } } },
	{ __LINE__, "\t10\t/\thour\t", 1, { { 10, HOUR, "10\t/\thour" } } },
	{ __LINE__, " 10 / 2 hours ;5/ minute", 2,
	  { { 10, 2 * HOUR, "10 / 2 hours" }, { 5, MIN, "5/ minute" } } },
	{ __LINE__, "1000000000/second", 1,
	  { { 1000000000, SEC, "1000000000/second" } } },
	{ __LINE__, "1/100 years", 1, { { 1, RL_MAX_PERIOD_MS, "1/100 years" } } },
	{ __LINE__, "1/1200 months", 1,
	  { { 1, RL_MAX_PERIOD_MS, "1/1200 months" } } },
	{ __LINE__, "1/36000 days", 1,
	  { { 1, RL_MAX_PERIOD_MS, "1/36000 days" } } },
	{ __LINE__, "1/3110400000 seconds", 1,
	  { { 1, RL_MAX_PERIOD_MS, "1/3110400000 seconds" } } },
	{ __LINE__, "1/second;1/minute;1/hour;1/day;1/month;1/year;"
	  "1/2 seconds;1/2 minutes", 8,
	  { { 1, SEC, "1/second" }, { 1, MIN, "1/minute" },
	    { 1, HOUR, "1/hour" }, { 1, DAY, "1/day" },
	    { 1, MONTH, "1/month" }, { 1, YEAR, "1/year" },
	    { 1, 2 * SEC, "1/2 seconds" }, { 1, 2 * MIN, "1/2 minutes" } } },
	{ __LINE__, "10" PAD56 "/hour", 1,
	  { { 10, HOUR, "10" PAD56 "/hour" } } },
};

Test(limit, good_forms)
{
	size_t i, k;

	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		const struct good_case *c = &good[i];
		struct rl_limit out[RL_MAX_LIMITS];
		struct rl_diag d = { 0, "" };
		size_t n = 99;
		int rc = rl_limits_parse(c->s, strlen(c->s), out, &n, &d);

		cr_assert_eq(rc, 0, "line %d: \"%s\" failed: %zu: %s", c->line,
			     c->s, d.col, d.msg);
		cr_assert_eq(n, c->n, "line %d: n %zu", c->line, n);
		for (k = 0; k < n; k++) {
			cr_assert_eq(out[k].count, c->l[k].count,
				     "line %d item %zu: count %llu", c->line,
				     k, (unsigned long long)out[k].count);
			cr_assert_eq(out[k].period_ms, c->l[k].period_ms,
				     "line %d item %zu: period %llu", c->line,
				     k, (unsigned long long)out[k].period_ms);
			cr_assert_str_eq(out[k].text, c->l[k].text,
					 "line %d item %zu: text", c->line, k);
		}
	}
}

struct bad_case {
	int line;
	const char *s;
	size_t len;             /* 0: strlen(s) */
	size_t col;
	const char *msg;
};

#define UNITS "second, minute, hour, day, month or year"
#define EMPTY ": expected a limit such as \"10/minute\""

static const struct bad_case bad[] = {
	{ __LINE__, "", 0, 0, "empty limit string" EMPTY },
	{ __LINE__, "  \t ", 0, 0, "empty limit string" EMPTY },
	{ __LINE__, ";10/hour", 0, 0, "empty limit before \";\"" EMPTY },
	{ __LINE__, "  ,10/hour", 0, 2, "empty limit before \",\"" EMPTY },
	{ __LINE__, "10/hour;;1/day", 0, 8, "empty limit before \";\"" EMPTY },
	{ __LINE__, "10/hour, ;1/day", 0, 9, "empty limit before \";\"" EMPTY },
	{ __LINE__, "10/hour||1/day", 0, 8, "empty limit before \"|\"" EMPTY },
	{ __LINE__, "10/hour;", 0, 7, "empty limit after \";\"" EMPTY },
	{ __LINE__, "10/hour, ", 0, 7, "empty limit after \",\"" EMPTY },
	{ __LINE__, "10/hour |\t", 0, 8, "empty limit after \"|\"" EMPTY },
	{ __LINE__, "per hour", 0, 0,
	  "bad limit \"per hour\": expected a count first, as in "
	  "\"10/minute\"" },
	{ __LINE__, "/hour", 0, 0,
	  "bad limit \"/hour\": expected a count first, as in \"10/minute\"" },
	{ __LINE__, "10/hour; x/day", 0, 9,
	  "bad limit \"x/day\": expected a count first, as in \"10/minute\"" },
	{ __LINE__, "-1/hour", 0, 0,
	  "bad limit \"-1/hour\": expected a count first, as in "
	  "\"10/minute\"" },
	{ __LINE__, "0/hour", 0, 0,
	  "bad limit count \"0\": count must be at least 1; use `exempt` to "
	  "lift limits" },
	{ __LINE__, "1/day; 00 per hour", 0, 7,
	  "bad limit count \"00\": count must be at least 1; use `exempt` to "
	  "lift limits" },
	{ __LINE__, "1000000001/hour", 0, 0,
	  "bad limit count \"1000000001\": at most 1000000000 hits per "
	  "period" },
	{ __LINE__, "99999999999999999999999/hour", 0, 0,
	  "bad limit count \"99999999999999999999999\": at most 1000000000 "
	  "hits per period" },
	{ __LINE__, "10/0 hours", 0, 3,
	  "bad limit period \"0\": the number of units must be at least 1" },
	{ __LINE__, "10 per 000seconds", 0, 7,
	  "bad limit period \"000\": the number of units must be at least 1" },
	{ __LINE__, "10/101 years", 0, 3,
	  "bad limit period \"101 years\": at most 100 years (36000 days)" },
	{ __LINE__, "10/ 36001days", 0, 4,
	  "bad limit period \"36001days\": at most 100 years (36000 days)" },
	{ __LINE__, "1/3110400001 seconds", 0, 2,
	  "bad limit period \"3110400001 seconds\": at most 100 years "
	  "(36000 days)" },
	{ __LINE__, "1/99999999999999999999999 seconds", 0, 2,
	  "bad limit period \"99999999999999999999999 seconds\": at most 100 "
	  "years (36000 days)" },
	{ __LINE__, "10/hours2", 0, 3,
	  "bad limit unit \"hours2\": expected " UNITS },
	{ __LINE__, "10/h", 0, 3, "bad limit unit \"h\": expected " UNITS },
	{ __LINE__, "10/s", 0, 3, "bad limit unit \"s\": expected " UNITS },
	{ __LINE__, "10 per sec", 0, 7,
	  "bad limit unit \"sec\": expected " UNITS },
	{ __LINE__, "10/hourss", 0, 3,
	  "bad limit unit \"hourss\": expected " UNITS },
	{ __LINE__, "1/day;10/7 weeks", 0, 11,
	  "bad limit unit \"weeks\": expected " UNITS },
	{ __LINE__, "10/hour/2", 0, 3,
	  "bad limit unit \"hour/2\": expected " UNITS },
	{ __LINE__, "10", 0, 2,
	  "incomplete limit \"10\": expected \"/\" or \"per\" and a unit, as "
	  "in \"10/minute\"" },
	{ __LINE__, "1/day; 10 ", 0, 9,
	  "incomplete limit \"10\": expected \"/\" or \"per\" and a unit, as "
	  "in \"10/minute\"" },
	{ __LINE__, "10/", 0, 3,
	  "incomplete limit \"10/\": expected a unit (" UNITS ")" },
	{ __LINE__, "10 per", 0, 6,
	  "incomplete limit \"10 per\": expected a unit (" UNITS ")" },
	{ __LINE__, "10/7", 0, 4,
	  "incomplete limit \"10/7\": expected a unit (" UNITS ")" },
	{ __LINE__, "10 hour", 0, 3,
	  "bad limit \"10 hour\": expected \"/\" or \"per\" after the count, "
	  "found \"hour\"" },
	{ __LINE__, "10 perhour", 0, 3,
	  "bad limit \"10 perhour\": expected \"/\" or \"per\" after the "
	  "count, found \"perhour\"" },
	{ __LINE__, "10x/hour", 0, 2,
	  "bad limit \"10x/hour\": expected \"/\" or \"per\" after the count, "
	  "found \"x/hour\"" },
	{ __LINE__, "10/hour x", 0, 8,
	  "unexpected \"x\" after limit \"10/hour\": expected \";\", \",\" or "
	  "\"|\" between limits" },
	{ __LINE__, "10/hour 5/minute", 0, 8,
	  "unexpected \"5/minute\" after limit \"10/hour\": expected \";\", "
	  "\",\" or \"|\" between limits" },
	{ __LINE__, "1/day,10 per 7 days extra", 0, 20,
	  "unexpected \"extra\" after limit \"10 per 7 days\": expected \";\", "
	  "\",\" or \"|\" between limits" },
	{ __LINE__, "10/hour\n", 0, 7,
	  "bad byte \"\\x0a\" in limit string: expected printable ASCII" },
	{ __LINE__, "10/h\xc3\xa9ure", 0, 4,
	  "bad byte \"\\xc3\" in limit string: expected printable ASCII" },
	{ __LINE__, "10/hour\0;1/day", 14, 7,
	  "bad byte \"\\x00\" in limit string: expected printable ASCII" },
	{ __LINE__, "\x7f", 0, 0,
	  "bad byte \"\\x7f\" in limit string: expected printable ASCII" },
	{ __LINE__, "1/1 second;1/2 seconds;1/3 seconds;1/4 seconds;"
	  "1/5 seconds;1/6 seconds;1/7 seconds;1/8 seconds; 1/9 seconds", 0,
	  96, "too many limits at \"1/9 seconds\": at most 8 in one limit "
	  "string" },
	{ __LINE__, "1/day; 10" PAD56 " /hour", 0, 7,
	  "limit \"10                                      ...\" is too long: "
	  "at most 63 bytes" },
	{ __LINE__, "10/hour;100/60 minutes", 0, 8,
	  "duplicate limit \"100/60 minutes\": same period as \"10/hour\"; "
	  "both would count the same hits" },
	{ __LINE__, "1/day, 5/minute, 2/24hours", 0, 17,
	  "duplicate limit \"2/24hours\": same period as \"1/day\"; both would "
	  "count the same hits" },
	{ __LINE__, "1/year|1/12 months", 0, 7,
	  "duplicate limit \"1/12 months\": same period as \"1/year\"; both "
	  "would count the same hits" },
	{ __LINE__, "1/day;1/day", 0, 6,
	  "duplicate limit \"1/day\": same period as \"1/day\"; both would "
	  "count the same hits" },
};

Test(limit, errors)
{
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const struct bad_case *c = &bad[i];
		struct rl_limit out[RL_MAX_LIMITS];
		struct rl_diag d = { 999, "" };
		size_t n = 99;
		size_t len = c->len ? c->len : strlen(c->s);
		int rc = rl_limits_parse(c->s, len, out, &n, &d);

		cr_assert_eq(rc, -1, "line %d: \"%s\" was accepted", c->line,
			     c->s);
		cr_assert_eq(n, 0, "line %d: n %zu after an error", c->line, n);
		cr_assert_str_eq(d.msg, c->msg, "line %d: message", c->line);
		cr_assert_eq(d.col, c->col, "line %d: col %zu, expected %zu",
			     c->line, d.col, c->col);
	}
}

/* The string is measured by len: bytes past it are never looked at. */
Test(limit, len_bounds_the_string)
{
	struct rl_limit out[RL_MAX_LIMITS];
	struct rl_diag d;
	size_t n;
	const char buf[] = { '1', '0', '/', 'h', 'o', 'u', 'r', 's', 'X' };

	cr_assert_eq(rl_limits_parse(buf, 8, out, &n, &d), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(out[0].text, "10/hours");
	cr_assert_eq(rl_limits_parse(buf, 6, out, &n, &d), -1);
	cr_assert_str_eq(d.msg, "bad limit unit \"hou\": expected " UNITS);
	cr_assert_eq(d.col, 3);
}

Test(limit, null_diag_is_allowed)
{
	struct rl_limit out[RL_MAX_LIMITS];
	size_t n = 5;

	cr_assert_eq(rl_limits_parse("0/hour", 6, out, &n, NULL), -1);
	cr_assert_eq(n, 0);
	cr_assert_eq(rl_limits_parse(NULL, 0, out, &n, NULL), -1);
}

/* Every unit spelling, with and without 's', in several cases. */
Test(limit, unit_spellings)
{
	static const struct {
		const char *unit;
		uint64_t ms;
	} u[] = {
		{ "second", SEC }, { "Seconds", SEC }, { "SECOND", SEC },
		{ "minute", MIN }, { "MINUTES", MIN }, { "hour", HOUR },
		{ "hOuRs", HOUR }, { "day", DAY }, { "Days", DAY },
		{ "month", MONTH }, { "monthS", MONTH }, { "year", YEAR },
		{ "YEARS", YEAR },
	};
	size_t i;

	for (i = 0; i < sizeof u / sizeof u[0]; i++) {
		char s[32];
		struct rl_limit out[RL_MAX_LIMITS];
		struct rl_diag d;
		size_t n;

		snprintf(s, sizeof s, "7 per 3 %s", u[i].unit);
		cr_assert_eq(rl_limits_parse(s, strlen(s), out, &n, &d), 0,
			     "%s: %s", s, d.msg);
		cr_assert_eq(out[0].count, 7);
		cr_assert_eq(out[0].period_ms, 3 * u[i].ms, "%s", s);
	}
}

/* ---- sizes, durations and bandwidth limits ---- */

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)

Test(limit, sizes)
{
	static const struct {
		int line;
		const char *s;
		uint64_t bytes;
	} ok[] = {
		{ __LINE__, "1048576", 1048576 },
		{ __LINE__, "0", 0 },
		{ __LINE__, "512K", 512 * KIB },
		{ __LINE__, "512k", 512 * KIB },
		{ __LINE__, "10MB", 10 * MIB },
		{ __LINE__, "10mb", 10 * MIB },
		{ __LINE__, "10MiB", 10 * MIB },
		{ __LINE__, "1 GiB", GIB },
		{ __LINE__, " 2\tgb ", 2 * GIB },
		{ __LINE__, "3KB", 3 * KIB },
		{ __LINE__, "3kib", 3 * KIB },
		{ __LINE__, "7B", 7 },
		{ __LINE__, "7 b", 7 },
		{ __LINE__, "1048576G", 1ULL << 50 },
		{ __LINE__, "1125899906842624", 1ULL << 50 },
	};
	static const struct {
		int line;
		const char *s;
		size_t col;
		const char *msg;
	} no[] = {
		{ __LINE__, "", 0, "empty size: expected a number with an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based))" },
		{ __LINE__, "  ", 0, "empty size: expected a number with an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based))" },
		{ __LINE__, "MB", 0, "bad size \"MB\": expected a number with an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based))" },
		{ __LINE__, "-1", 0, "bad size \"-1\": expected a number with an optional unit (B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based))" },
		{ __LINE__, "10XB", 2, "bad size unit \"XB\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)" },
		{ __LINE__, "10 T", 3, "bad size unit \"T\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)" },
		{ __LINE__, "1.5M", 1, "bad size \"1.5M\": fractions are not supported (write 1536K rather than 1.5M)" },
		{ __LINE__, "10 MB x", 6, "unexpected \"x\" after the size \"10 MB\"" },
		{ __LINE__, "1048577G", 0, "size \"1048577G\" is too large: at most 1048576G (1 PiB)" },
		{ __LINE__, "99999999999999999999999", 0, "size \"99999999999999999999999\" is too large: at most 1048576G (1 PiB)" },
		{ __LINE__, "1\x01", 1, "bad byte \"\\x01\" in a size: expected printable ASCII" },
	};

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct rl_diag d;
		uint64_t b = 99;
		cr_assert_eq(rl_size_parse(ok[i].s, strlen(ok[i].s), &b, &d), 0,
			     "line %d: %s", ok[i].line, d.msg);
		cr_assert_eq(b, ok[i].bytes, "line %d: %llu", ok[i].line,
			     (unsigned long long)b);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		struct rl_diag d;
		uint64_t b;
		cr_assert_eq(rl_size_parse(no[i].s, strlen(no[i].s), &b, &d), -1,
			     "line %d", no[i].line);
		cr_assert_str_eq(d.msg, no[i].msg, "line %d", no[i].line);
		cr_assert_eq(d.col, no[i].col, "line %d: col %zu", no[i].line,
			     d.col);
	}
	/* len bounds the text */
	uint64_t b;
	cr_assert_eq(rl_size_parse("10MB", 2, &b, NULL), 0);
	cr_assert_eq(b, 10);
}

Test(limit, durations)
{
	static const struct {
		int line;
		const char *s;
		int64_t ms;
	} ok[] = {
		{ __LINE__, "500ms", 500 },
		{ __LINE__, "30s", 30000 },
		{ __LINE__, "30", 30000 },
		{ __LINE__, "2m", 120000 },
		{ __LINE__, "1h", 3600000 },
		{ __LINE__, "1H", 3600000 },
		{ __LINE__, " 45 S ", 45000 },
		{ __LINE__, "0", 0 },
		{ __LINE__, "3110400000s", (int64_t)RL_MAX_PERIOD_MS },
	};
	static const struct {
		int line;
		const char *s;
		size_t col;
		const char *msg;
	} no[] = {
		{ __LINE__, "", 0, "empty duration: expected a number with an optional unit (ms, s, m or h; a bare number is seconds)" },
		{ __LINE__, "s", 0, "bad duration \"s\": expected a number with an optional unit (ms, s, m or h; a bare number is seconds)" },
		{ __LINE__, "10d", 2, "bad duration unit \"d\": expected ms, s, m or h; a bare number is seconds" },
		{ __LINE__, "1.5s", 1, "bad duration \"1.5s\": fractions are not supported (write 1500ms rather than 1.5s)" },
		{ __LINE__, "5s later", 3, "unexpected \"later\" after the duration \"5s\"" },
		{ __LINE__, "3110400001s", 0, "duration \"3110400001s\" is too large: at most 100 years" },
	};

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct rl_diag d;
		int64_t ms = -1;
		cr_assert_eq(rl_duration_parse(ok[i].s, strlen(ok[i].s), &ms, &d),
			     0, "line %d: %s", ok[i].line, d.msg);
		cr_assert_eq(ms, ok[i].ms, "line %d: %lld", ok[i].line,
			     (long long)ms);
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		struct rl_diag d;
		int64_t ms;
		cr_assert_eq(rl_duration_parse(no[i].s, strlen(no[i].s), &ms,
					       &d), -1, "line %d", no[i].line);
		cr_assert_str_eq(d.msg, no[i].msg, "line %d", no[i].line);
		cr_assert_eq(d.col, no[i].col, "line %d: col %zu", no[i].line,
			     d.col);
	}
}

Test(limit, bandwidth)
{
	static const struct {
		int line;
		const char *s;
		size_t n;
		struct {
			uint64_t count, unit, period_ms;
			const char *text;
		} l[2];
	} ok[] = {
		{ __LINE__, "10MB/minute", 1,
		  { { 10 * MIB, 1, MIN, "10MB/minute" } } },
		{ __LINE__, "10MB per minute; 100MB/day", 2,
		  { { 10 * MIB, 1, MIN, "10MB per minute" },
		    { 100 * MIB, 1, DAY, "100MB/day" } } },
		{ __LINE__, "1 GiB per hour", 1,
		  { { GIB / KIB, KIB, HOUR, "1 GiB per hour" } } },
		{ __LINE__, "1000000000/hour", 1,
		  { { 1000000000, 1, HOUR, "1000000000/hour" } } },
		/* a byte over RL_MAX_COUNT: KiB, the limit rounded down */
		{ __LINE__, "1000000001/hour", 1,
		  { { 1000000001 / KIB, KIB, HOUR, "1000000001/hour" } } },
		{ __LINE__, "1000G/day", 1,
		  { { 1000 * GIB / MIB, MIB, DAY, "1000G/day" } } },
		{ __LINE__, "1Kper 10 seconds", 1,
		  { { KIB, 1, 10 * SEC, "1Kper 10 seconds" } } },
	};
	static const struct {
		int line;
		const char *s;
		size_t col;
		const char *msg;
	} no[] = {
		{ __LINE__, "MB/minute", 0, "bad bandwidth limit \"MB/minute\": expected a size first, as in \"10MB/minute\"" },
		{ __LINE__, "10XB/minute", 2, "bad size unit \"XB\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)" },
		{ __LINE__, "1K/minute; 0MB/day", 11, "bad bandwidth size \"0MB\": at least 1 byte per period" },
		{ __LINE__, "1048576G/day", 0, "bad bandwidth size \"1048576G\": at most 1000000000M per period" },
		{ __LINE__, "10MB", 4, "incomplete limit \"10MB\": expected \"/\" or \"per\" and a unit, as in \"10MB/minute\"" },
		{ __LINE__, "10MB/fortnight", 5, "bad limit unit \"fortnight\": expected second, minute, hour, day, month or year" },
		{ __LINE__, "10MB pro minute", 5, "bad limit \"10MB pro minute\": expected \"/\" or \"per\" after the size, found \"pro\"" },
		{ __LINE__, "1MB/hour;2MB/60 minutes", 9, "duplicate limit \"2MB/60 minutes\": same period as \"1MB/hour\"; both would count the same hits" },
		{ __LINE__, "1MB/hour;", 8, "empty limit after \";\": expected a limit such as \"10MB/minute\"" },
	};

	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct rl_limit out[RL_MAX_LIMITS];
		struct rl_diag d;
		size_t n = 0;
		cr_assert_eq(rl_bandwidth_parse(ok[i].s, strlen(ok[i].s), out, &n,
						&d), 0, "line %d: %s", ok[i].line,
			     d.msg);
		cr_assert_eq(n, ok[i].n, "line %d", ok[i].line);
		for (size_t k = 0; k < n; k++) {
			cr_assert_eq(out[k].count, ok[i].l[k].count, "line %d: %llu",
				     ok[i].line, (unsigned long long)out[k].count);
			cr_assert_eq(out[k].unit, ok[i].l[k].unit, "line %d",
				     ok[i].line);
			cr_assert_eq(out[k].period_ms, ok[i].l[k].period_ms,
				     "line %d", ok[i].line);
			cr_assert_str_eq(out[k].text, ok[i].l[k].text, "line %d",
					 ok[i].line);
		}
	}
	for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
		struct rl_limit out[RL_MAX_LIMITS];
		struct rl_diag d;
		size_t n;
		cr_assert_eq(rl_bandwidth_parse(no[i].s, strlen(no[i].s), out,
						&n, &d), -1, "line %d", no[i].line);
		cr_assert_str_eq(d.msg, no[i].msg, "line %d", no[i].line);
		cr_assert_eq(d.col, no[i].col, "line %d: col %zu", no[i].line,
			     d.col);
	}
	/* request limits are not bandwidth limits */
	struct rl_limit out[RL_MAX_LIMITS];
	size_t n;
	cr_assert_eq(rl_limits_parse("10/minute", 9, out, &n, NULL), 0);
	cr_assert_eq(out[0].unit, 0);
}
