/*
 * test_match.c - path normalisation (every bypass spelling of one path
 * lands on the same text), pattern compilation (the precedence fields and
 * the "never matches" flag), glob matching, and the exact message and
 * column of every error.  Table-driven; a failing case reports its line.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "internal.h"

struct norm_case {
	int line;
	const char *in;
	size_t len;             /* 0: strlen(in) */
	int fold;
	const char *out;
};

static const struct norm_case norm[] = {
	{ __LINE__, "/", 0, 0, "/" },
	{ __LINE__, "/login", 0, 0, "/login" },
	/* spellings of /login that must not escape its rule */
	{ __LINE__, "//login", 0, 0, "/login" },
	{ __LINE__, "/./login", 0, 0, "/login" },
	{ __LINE__, "/x/../login", 0, 0, "/login" },
	{ __LINE__, "/%6cogin", 0, 0, "/login" },
	{ __LINE__, "/%6Cogin", 0, 0, "/login" },
	{ __LINE__, "/login;x=1", 0, 0, "/login" },
	{ __LINE__, "/login/", 0, 0, "/login" },
	{ __LINE__, "/login//", 0, 0, "/login" },
	{ __LINE__, "/LOGIN", 0, 1, "/login" },
	{ __LINE__, "/%4C%4fGIN", 0, 1, "/login" },
	{ __LINE__, "/%2e%2e/login", 0, 0, "/login" },
	{ __LINE__, "/%2E/login", 0, 0, "/login" },
	{ __LINE__, "/x/%2e%2E/login", 0, 0, "/login" },
	/* "..;" and ".;x" are names to lighttpd, Apache and nginx (a
	 * script gets them in PATH_INFO), not dot segments */
	{ __LINE__, "/..;/login", 0, 0, "/..;/login" },
	{ __LINE__, "/x/..;y/login", 0, 0, "/x/..;y/login" },
	{ __LINE__, "/login.cgi/..;", 0, 0, "/login.cgi/..;" },
	{ __LINE__, "/login.cgi/..%3B", 0, 0, "/login.cgi/..;" },
	{ __LINE__, "/login.cgi/.;/x", 0, 0, "/login.cgi/.;/x" },
	{ __LINE__, "/login.cgi/..;/ping", 0, 0, "/login.cgi/..;/ping" },
	{ __LINE__, "/a/;x/../b", 0, 0, "/a/b" },
	{ __LINE__, "/a/x;y/../b", 0, 0, "/a/b" },
	{ __LINE__, "/api/group%2Fproject", 0, 0, "/api/group/project" },
	{ __LINE__, "/;/login", 0, 0, "/;/login" },
	{ __LINE__, "/login%3Bx", 0, 0, "/login" },
	{ __LINE__, "/login%2F", 0, 0, "/login" },
	{ __LINE__, "/../../login", 0, 0, "/login" },
	{ __LINE__, "/.%2e/login", 0, 0, "/login" },
	/* one decode only: a second layer stays literal */
	{ __LINE__, "/%252e%252e/login", 0, 0, "/%2e%2e/login" },
	{ __LINE__, "/%25", 0, 0, "/%" },
	/* case is kept unless folding */
	{ __LINE__, "/LOGIN", 0, 0, "/LOGIN" },
	{ __LINE__, "/Api/V1", 0, 1, "/api/v1" },
	{ __LINE__, "/a;jsessionid=1/b;x", 0, 0, "/a/b" },
	{ __LINE__, "/a/%2e%2e/b", 0, 0, "/b" },
	{ __LINE__, "/a%2Fb", 0, 0, "/a/b" },
	{ __LINE__, "/..", 0, 0, "/" },
	{ __LINE__, "/.", 0, 0, "/" },
	{ __LINE__, "/a/b/..", 0, 0, "/a" },
	{ __LINE__, "/a/b/../..", 0, 0, "/" },
	{ __LINE__, "/a/b/../../../..", 0, 0, "/" },
	{ __LINE__, "/a/./b/./c/.", 0, 0, "/a/b/c" },
	{ __LINE__, "/a/b/../c/./d", 0, 0, "/a/c/d" },
	{ __LINE__, "///", 0, 0, "/" },
	{ __LINE__, "/a//b///c//", 0, 0, "/a/b/c" },
	{ __LINE__, "/...", 0, 0, "/..." },
	{ __LINE__, "/.a/..b/a.", 0, 0, "/.a/..b/a." },
	{ __LINE__, "/a b", 0, 0, "/a b" },
	{ __LINE__, "/%20", 0, 0, "/ " },
	{ __LINE__, "/caf%C3%A9", 0, 0, "/caf\xc3\xa9" },
	{ __LINE__, "/CAF\xc3\x89", 0, 1, "/caf\xc3\x89" },
	{ __LINE__, "/a?b", 0, 0, "/a?b" },
	{ __LINE__, "/a%3Fb", 0, 0, "/a?b" },
	{ __LINE__, "/a/;/b", 0, 0, "/a/;/b" },
	{ __LINE__, "/a;x/../b", 0, 0, "/b" },
	{ __LINE__, "/login/xyz", 6, 0, "/login" },
};

Test(match, normalize)
{
	size_t i;

	for (i = 0; i < sizeof norm / sizeof norm[0]; i++) {
		const struct norm_case *c = &norm[i];
		size_t len = c->len ? c->len : strlen(c->in), olen = 999;
		char out[256];
		struct rl_diag d = { 0, "" };
		int rc = rl_path_normalize(c->in, len, c->fold, out, &olen, &d);

		cr_assert_eq(rc, 0, "line %d: %s: %zu: %s", c->line, c->in,
			     d.col, d.msg);
		cr_assert_str_eq(out, c->out, "line %d: \"%s\" -> \"%s\"",
				 c->line, c->in, out);
		cr_assert_eq(olen, strlen(c->out), "line %d: out_len %zu",
			     c->line, olen);
		cr_assert_leq(olen, len, "line %d", c->line);
	}
}

struct err_case {
	int line;
	const char *in;
	size_t len;             /* 0: strlen(in) */
	size_t col;
	const char *msg;
};

#define HEX ": expected '%' and two hex digits"

static const struct err_case norm_err[] = {
	{ __LINE__, "", 0, 0, "empty path: expected a path starting with '/'" },
	{ __LINE__, "login", 0, 0,
	  "bad path \"login\": a path starts with '/'" },
	{ __LINE__, "%2Flogin", 0, 0,
	  "bad path \"%2Flogin\": a path starts with '/'" },
	{ __LINE__, "a\"b\\", 0, 0,
	  "bad path \"a\\\"b\\\\\": a path starts with '/'" },
	{ __LINE__, "/a%zz", 0, 2, "bad path escape \"%zz\"" HEX },
	{ __LINE__, "/a%2", 0, 2, "bad path escape \"%2\"" HEX },
	{ __LINE__, "/a%", 0, 2, "bad path escape \"%\"" HEX },
	{ __LINE__, "/a%g0", 0, 2, "bad path escape \"%g0\"" HEX },
	{ __LINE__, "/a%0g", 0, 2, "bad path escape \"%0g\"" HEX },
	{ __LINE__, "/ok/%%41", 0, 4, "bad path escape \"%%4\"" HEX },
	{ __LINE__, "/a%\n\x01", 0, 2, "bad path escape \"%\\x0a\\x01\"" HEX },
	{ __LINE__, "/a%00b", 0, 2,
	  "bad path escape \"%00\": it decodes to a NUL byte" },
	{ __LINE__, "/a\0b", 4, 2,
	  "bad path \"/a\\x00b\": a path cannot contain a NUL byte" },
	/* nginx decodes %2F before it resolves "..", Apache after: no
	 * reading is right for both */
	{ __LINE__, "/x%2F..%2Flogin", 0, 0,
	  "ambiguous path \"/x%2F..%2Flogin\": an encoded '/' (%2F) with a \".\" or \"..\" segment, which web servers resolve differently" },
	{ __LINE__, "/login.cgi/%2f/..", 0, 0,
	  "ambiguous path \"/login.cgi/%2f/..\": an encoded '/' (%2F) with a \".\" or \"..\" segment, which web servers resolve differently" },
	{ __LINE__, "/sub/%2F/./app.cgi", 0, 0,
	  "ambiguous path \"/sub/%2F/./app.cgi\": an encoded '/' (%2F) with a \".\" or \"..\" segment, which web servers resolve differently" },
};

Test(match, normalize_errors)
{
	size_t i;

	for (i = 0; i < sizeof norm_err / sizeof norm_err[0]; i++) {
		const struct err_case *c = &norm_err[i];
		size_t len = c->len ? c->len : strlen(c->in), olen;
		char out[256];
		struct rl_diag d = { 999, "" };

		cr_assert_eq(rl_path_normalize(c->in, len, 0, out, &olen, &d),
			     -1, "line %d: accepted", c->line);
		cr_assert_str_eq(d.msg, c->msg, "line %d: message", c->line);
		cr_assert_eq(d.col, c->col, "line %d: col %zu", c->line, d.col);
	}
}

Test(match, normalize_length_bound)
{
	char *in = malloc(RL_PATH_MAX + 2), *out = malloc(RL_PATH_MAX + 2);
	struct rl_diag d;
	size_t olen;

	memset(in, 'a', RL_PATH_MAX + 1);
	in[0] = '/';
	cr_assert_eq(rl_path_normalize(in, RL_PATH_MAX, 0, out, &olen, &d), 0);
	cr_assert_eq(olen, RL_PATH_MAX);
	cr_assert_eq(rl_path_normalize(in, RL_PATH_MAX + 1, 0, out, &olen, &d),
		     -1);
	cr_assert_str_eq(d.msg, "path is too long: 8193 bytes, at most 8192");
	cr_assert_eq(d.col, RL_PATH_MAX);
	free(in);
	free(out);
}

/* A long path in a message is cut to 40 bytes. */
Test(match, long_text_is_cut_in_messages)
{
	char out[128];
	struct rl_diag d;
	size_t olen;
	const char *in = "abcdefghijabcdefghijabcdefghijabcdefghijXYZ";

	cr_assert_eq(rl_path_normalize(in, strlen(in), 0, out, &olen, &d), -1);
	cr_assert_str_eq(d.msg, "bad path \"abcdefghijabcdefghijabcdefghij"
			 "abcdefghij...\": a path starts with '/'");
}

struct pat_case {
	int line;
	const char *s;
	int fold;
	const char *text;
	int exact;
	size_t prefix;
	size_t chars;
	unsigned wildcards;
	int never;
};

static const struct pat_case pats[] = {
	{ __LINE__, "/", 0, "/", 1, 1, 1, 0, 0 },
	{ __LINE__, "/login", 0, "/login", 1, 6, 6, 0, 0 },
	{ __LINE__, "/LOGIN", 1, "/login", 1, 6, 6, 0, 0 },
	{ __LINE__, "/LOGIN", 0, "/LOGIN", 1, 6, 6, 0, 0 },
	{ __LINE__, "/api/*", 0, "/api/*", 0, 5, 5, 1, 0 },
	{ __LINE__, "/api/**", 0, "/api/**", 0, 5, 5, 1, 0 },
	{ __LINE__, "/**", 0, "/**", 0, 1, 1, 1, 0 },
	{ __LINE__, "/*", 0, "/*", 0, 1, 1, 1, 0 },
	{ __LINE__, "/a/**/b", 0, "/a/**/b", 0, 3, 5, 1, 0 },
	{ __LINE__, "/a/*.json", 0, "/a/*.json", 0, 3, 8, 1, 0 },
	{ __LINE__, "/*/x/*", 0, "/*/x/*", 0, 1, 4, 2, 0 },
	{ __LINE__, "/a*b*c", 0, "/a*b*c", 0, 2, 4, 2, 0 },
	{ __LINE__, "/**/*.PHP", 1, "/**/*.php", 0, 1, 6, 2, 0 },
	{ __LINE__, "/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*", 0,
	  "/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*", 0, 1, 16, 16, 0 },
	{ __LINE__, "/a.b", 0, "/a.b", 1, 4, 4, 0, 0 },
	{ __LINE__, "/.well-known/x", 0, "/.well-known/x", 1, 14, 14, 0, 0 },
	{ __LINE__, "/...", 0, "/...", 1, 4, 4, 0, 0 },
	/* valid, but no normalised request path reaches them (RL_PAT_NEVER),
	 * or only one that escaped '?', '#' or '%' (RL_PAT_ENCODED) */
	{ __LINE__, "/a//b", 0, "/a//b", 1, 5, 5, 0, 1 },
	{ __LINE__, "/a/./b", 0, "/a/./b", 1, 6, 6, 0, 1 },
	{ __LINE__, "/a/../b", 0, "/a/../b", 1, 7, 7, 0, 1 },
	{ __LINE__, "/a/", 0, "/a/", 1, 3, 3, 0, 1 },
	{ __LINE__, "//", 0, "//", 1, 2, 2, 0, 1 },
	{ __LINE__, "/.", 0, "/.", 1, 2, 2, 0, 1 },
	{ __LINE__, "/..", 0, "/..", 1, 3, 3, 0, 1 },
	{ __LINE__, "/a?x", 0, "/a?x", 1, 4, 4, 0, RL_PAT_ENCODED },
	{ __LINE__, "/a#x", 0, "/a#x", 1, 4, 4, 0, RL_PAT_ENCODED },
	{ __LINE__, "/a%20b", 0, "/a%20b", 1, 6, 6, 0, RL_PAT_ENCODED },
	{ __LINE__, "/a;x", 0, "/a;x", 1, 4, 4, 0, 1 },
	{ __LINE__, "/a/*/", 0, "/a/*/", 0, 3, 4, 1, 1 },
	{ __LINE__, "/a/**/", 0, "/a/**/", 0, 3, 4, 1, 1 },
	{ __LINE__, "/a/*?", 0, "/a/*?", 0, 3, 4, 1, RL_PAT_ENCODED },
};

Test(match, compile)
{
	size_t i;

	for (i = 0; i < sizeof pats / sizeof pats[0]; i++) {
		const struct pat_case *c = &pats[i];
		struct rl_pattern p;
		char buf[128];
		struct rl_diag d = { 0, "" };
		int never = 7;
		int rc = rl_pattern_compile(c->s, strlen(c->s), c->fold, &p,
					    buf, &never, &d);

		cr_assert_eq(rc, 0, "line %d: %s", c->line, d.msg);
		cr_assert_str_eq(p.text, c->text, "line %d", c->line);
		cr_assert_eq(p.text, buf, "line %d: text is buf", c->line);
		cr_assert_eq(p.len, strlen(c->text), "line %d", c->line);
		cr_assert_eq(p.exact, c->exact, "line %d: exact", c->line);
		cr_assert_eq(p.literal_prefix, c->prefix,
			     "line %d: literal_prefix %zu", c->line,
			     p.literal_prefix);
		cr_assert_eq(p.literal_chars, c->chars,
			     "line %d: literal_chars %zu", c->line,
			     p.literal_chars);
		cr_assert_eq(p.wildcards, c->wildcards, "line %d: wildcards %u",
			     c->line, p.wildcards);
		cr_assert_eq(never, c->never, "line %d: never %d", c->line,
			     never);
	}
}

#define WHOLE ": \"**\" must be a whole segment, as in \"/api/**\""

static const struct err_case pat_err[] = {
	{ __LINE__, "", 0, 0,
	  "empty path pattern: expected a path such as \"/login\"" },
	{ __LINE__, "api/x", 0, 0,
	  "bad path pattern \"api/x\": a pattern starts with '/'" },
	{ __LINE__, "*", 0, 0,
	  "bad path pattern \"*\": a pattern starts with '/'" },
	{ __LINE__, "/a**", 0, 2, "bad path pattern \"/a**\"" WHOLE },
	{ __LINE__, "/**a", 0, 1, "bad path pattern \"/**a\"" WHOLE },
	{ __LINE__, "/a/***", 0, 3, "bad path pattern \"/a/***\"" WHOLE },
	{ __LINE__, "/a/b**/c", 0, 4, "bad path pattern \"/a/b**/c\"" WHOLE },
	{ __LINE__, "/x/*a**", 0, 5, "bad path pattern \"/x/*a**\"" WHOLE },
	{ __LINE__, "/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*", 0, 33,
	  "bad path pattern \"/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*/*\": more "
	  "than 16 wildcards" },
	{ __LINE__, "/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**", 0,
	  49, "bad path pattern \"/**/**/**/**/**/**/**/**/**/**/**/**/**/..."
	  "\": more than 16 wildcards" },
	{ __LINE__, "/a*\0", 4, 3,
	  "bad path pattern \"/a*\\x00\": a pattern cannot contain a NUL "
	  "byte" },
};

Test(match, compile_errors)
{
	size_t i;

	for (i = 0; i < sizeof pat_err / sizeof pat_err[0]; i++) {
		const struct err_case *c = &pat_err[i];
		size_t len = c->len ? c->len : strlen(c->in);
		struct rl_pattern p;
		char buf[128];
		struct rl_diag d = { 999, "" };
		int never = 7;

		cr_assert_eq(rl_pattern_compile(c->in, len, 0, &p, buf, &never,
						&d), -1, "line %d: accepted",
			     c->line);
		cr_assert_str_eq(d.msg, c->msg, "line %d: message", c->line);
		cr_assert_eq(d.col, c->col, "line %d: col %zu", c->line, d.col);
		cr_assert_eq(never, 0, "line %d", c->line);
	}
}

Test(match, compile_length_bound)
{
	char *s = malloc(RL_PATH_MAX + 2), *buf = malloc(RL_PATH_MAX + 2);
	struct rl_pattern p;
	struct rl_diag d;

	memset(s, 'a', RL_PATH_MAX + 1);
	s[0] = '/';
	cr_assert_eq(rl_pattern_compile(s, RL_PATH_MAX, 0, &p, buf, NULL, &d),
		     0);
	cr_assert_eq(rl_pattern_compile(s, RL_PATH_MAX + 1, 0, &p, buf, NULL,
					&d), -1);
	cr_assert_str_eq(d.msg, "path pattern is too long: 8193 bytes, at "
			 "most 8192");
	cr_assert_eq(d.col, RL_PATH_MAX);
	free(s);
	free(buf);
}

struct glob_case {
	int line;
	const char *pattern;
	const char *path;
	int match;
};

static const struct glob_case globs[] = {
	/* exact */
	{ __LINE__, "/login", "/login", 1 },
	{ __LINE__, "/login", "/login/x", 0 },
	{ __LINE__, "/login", "/logi", 0 },
	{ __LINE__, "/login", "/LOGIN", 0 },
	{ __LINE__, "/", "/", 1 },
	{ __LINE__, "/", "/a", 0 },
	/* '*' inside one segment */
	{ __LINE__, "/api/*", "/api/x", 1 },
	{ __LINE__, "/api/*", "/api", 0 },
	{ __LINE__, "/api/*", "/api/x/y", 0 },
	{ __LINE__, "/api/*.json", "/api/a.json", 1 },
	{ __LINE__, "/api/*.json", "/api/.json", 1 },
	{ __LINE__, "/api/*.json", "/api/a.jsonx", 0 },
	{ __LINE__, "/api/*.json", "/api/a/b.json", 0 },
	{ __LINE__, "/*", "/", 0 },
	{ __LINE__, "/*", "/a", 1 },
	{ __LINE__, "/*", "/a/b", 0 },
	{ __LINE__, "/a*b*c", "/abc", 1 },
	{ __LINE__, "/a*b*c", "/aXbYc", 1 },
	{ __LINE__, "/a*b*c", "/abcbc", 1 },
	{ __LINE__, "/a*b*c", "/aXbYcZ", 0 },
	{ __LINE__, "/a*b*c", "/acb", 0 },
	{ __LINE__, "/a*b*c", "/ab/c", 0 },
	{ __LINE__, "/a/*/c", "/a/b/c", 1 },
	{ __LINE__, "/a/*/c", "/a/c", 0 },
	{ __LINE__, "/a/*/c", "/a/b/b/c", 0 },
	{ __LINE__, "/*/x/*", "/a/x/b", 1 },
	{ __LINE__, "/*/x/*", "/x/x/x", 1 },
	{ __LINE__, "/*/x/*", "/a/y/b", 0 },
	/* "**" at the end */
	{ __LINE__, "/api/**", "/api", 1 },
	{ __LINE__, "/api/**", "/api/x", 1 },
	{ __LINE__, "/api/**", "/api/x/y", 1 },
	{ __LINE__, "/api/**", "/apix", 0 },
	{ __LINE__, "/api/**", "/ap", 0 },
	{ __LINE__, "/api/**", "/", 0 },
	{ __LINE__, "/api/**", "/x/api", 0 },
	{ __LINE__, "/**", "/", 1 },
	{ __LINE__, "/**", "/a/b/c", 1 },
	/* "**" at the start */
	{ __LINE__, "/**/x", "/x", 1 },
	{ __LINE__, "/**/x", "/a/x", 1 },
	{ __LINE__, "/**/x", "/a/b/x", 1 },
	{ __LINE__, "/**/x", "/a/b/xy", 0 },
	{ __LINE__, "/**/x", "/x/a", 0 },
	{ __LINE__, "/**/*.php", "/x.php", 1 },
	{ __LINE__, "/**/*.php", "/a/b/x.php", 1 },
	{ __LINE__, "/**/*.php", "/a/x.phps", 0 },
	/* "**" in the middle */
	{ __LINE__, "/a/**/b", "/a/b", 1 },
	{ __LINE__, "/a/**/b", "/a/x/y/b", 1 },
	{ __LINE__, "/a/**/b", "/a/b/b", 1 },
	{ __LINE__, "/a/**/b", "/a/x/y/c", 0 },
	{ __LINE__, "/a/**/b", "/a/b/c", 0 },
	{ __LINE__, "/a/**/b", "/b", 0 },
	{ __LINE__, "/a/**/b", "/a", 0 },
	{ __LINE__, "/a/**/b/**/c", "/a/b/c", 1 },
	{ __LINE__, "/a/**/b/**/c", "/a/x/b/y/z/c", 1 },
	{ __LINE__, "/a/**/b/**/c", "/a/c/b", 0 },
	{ __LINE__, "/a/**/**/b", "/a/b", 1 },
	{ __LINE__, "/a/**/**/b", "/a/x/y/b", 1 },
	{ __LINE__, "/a/**/b/*", "/a/x/b/y", 1 },
	{ __LINE__, "/a/**/b/*", "/a/b/y", 1 },
	{ __LINE__, "/a/**/b/*", "/a/b", 0 },
	{ __LINE__, "/*/**", "/", 0 },
	{ __LINE__, "/*/**", "/a", 1 },
	{ __LINE__, "/*/**", "/a/b", 1 },
	{ __LINE__, "/**/b/**", "/b", 1 },
	{ __LINE__, "/**/b/**", "/a/b/c", 1 },
	{ __LINE__, "/**/b/**", "/a/c", 0 },
	/* never-matching patterns stay unmatched by normalised paths */
	{ __LINE__, "/a/", "/a", 0 },
	{ __LINE__, "/a//b", "/a/b", 0 },
	{ __LINE__, "/a/*/", "/a/b", 0 },
	/* not a normalised path at all */
	{ __LINE__, "/**", "", 0 },
	{ __LINE__, "/**", "a", 0 },
};

Test(match, glob)
{
	size_t i;

	for (i = 0; i < sizeof globs / sizeof globs[0]; i++) {
		const struct glob_case *c = &globs[i];
		struct rl_pattern p;
		char buf[128];
		struct rl_diag d;

		cr_assert_eq(rl_pattern_compile(c->pattern, strlen(c->pattern),
						0, &p, buf, NULL, &d), 0,
			     "line %d: %s", c->line, d.msg);
		cr_assert_eq(rl_pattern_match(&p, c->path, strlen(c->path)),
			     c->match, "line %d: %s vs %s", c->line,
			     c->pattern, c->path);
	}
}

/* With fold_case, pattern and path are both folded: every case spelling
 * of the path meets the rule. */
Test(match, fold_case_end_to_end)
{
	static const char *const paths[] = { "/API/Login", "/api/login",
					     "/%41pi/LOGIN", "//Api/./login/" };
	struct rl_pattern p;
	char buf[64], out[64];
	struct rl_diag d;
	size_t i, olen;

	cr_assert_eq(rl_pattern_compile("/Api/*", 6, 1, &p, buf, NULL, &d), 0);
	for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		cr_assert_eq(rl_path_normalize(paths[i], strlen(paths[i]), 1,
					       out, &olen, &d), 0);
		cr_assert_str_eq(out, "/api/login");
		cr_assert_eq(rl_pattern_match(&p, out, olen), 1, "%s",
			     paths[i]);
	}
}

/* The path is measured by len, not by a NUL. */
Test(match, match_uses_len)
{
	struct rl_pattern p;
	char buf[64];
	struct rl_diag d;

	cr_assert_eq(rl_pattern_compile("/a/*", 4, 0, &p, buf, NULL, &d), 0);
	cr_assert_eq(rl_pattern_match(&p, "/a/bc/d", 5), 1);
	cr_assert_eq(rl_pattern_match(&p, "/a/bc/d", 7), 0);
	cr_assert_eq(rl_pattern_compile("/loginXYZ", 6, 0, &p, buf, NULL, &d),
		     0);
	cr_assert_str_eq(p.text, "/login");
	cr_assert_eq(rl_pattern_match(&p, "/login", 6), 1);
}

/* Adversarial inputs for a backtracking matcher finish at once. */
Test(match, bounded_cost, .timeout = 5)
{
	static char path[RL_PATH_MAX + 1];
	struct rl_pattern p;
	char buf[128];
	struct rl_diag d;
	const char *pat1 = "/*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
	const char *pat2 = "/**/**/**/**/**/**/**/**/**/**/**/**/**/**/**/b";
	size_t i;

	path[0] = '/';
	for (i = 1; i < RL_PATH_MAX; i++)
		path[i] = 'a';
	cr_assert_eq(rl_pattern_compile(pat1, strlen(pat1), 0, &p, buf, NULL,
					&d), 0, "%s", d.msg);
	for (i = 0; i < 200; i++)
		cr_assert_eq(rl_pattern_match(&p, path, RL_PATH_MAX), 0);

	for (i = 1; i < RL_PATH_MAX; i++)
		path[i] = i % 2 ? 'a' : '/';
	cr_assert_eq(rl_pattern_compile(pat2, strlen(pat2), 0, &p, buf, NULL,
					&d), 0, "%s", d.msg);
	for (i = 0; i < 200; i++)
		cr_assert_eq(rl_pattern_match(&p, path, RL_PATH_MAX), 0);
	path[RL_PATH_MAX - 1] = 'b';
	cr_assert_eq(rl_pattern_match(&p, path, RL_PATH_MAX), 1);
}

/* One spelling, folded and not: rl_path_normalize, rl_path_view and the
 * full route forced by a leading "/" (a repeated slash, which changes
 * nothing else) agree.  Returns how many results were compared. */
static int
same_by_every_route(const char *in, size_t len)
{
	char forced[96], out[96], out2[96], vbuf[96];
	int n = 0;

	snprintf(forced, sizeof(forced), "/%s", in);
	for (int fold = 0; fold < 2; fold++) {
		struct rl_diag d;
		size_t olen = 0, olen2 = 0, vlen = 0;
		const char *v = NULL;
		int rc = rl_path_normalize(in, len, fold, out, &olen, &d);
		int rc2 = rl_path_normalize(forced, strlen(forced), fold,
					    out2, &olen2, &d);
		int rcv = rl_path_view(in, len, fold, vbuf, &v, &vlen, &d);

		cr_assert_eq(rc, rc2, "%s fold %d", in, fold);
		cr_assert_eq(rc, rcv, "%s fold %d", in, fold);
		if (rc != 0)
			continue;
		cr_assert_eq(olen, olen2, "%s fold %d", in, fold);
		cr_assert_eq(memcmp(out, out2, olen), 0, "%s fold %d", in, fold);
		cr_assert_eq(vlen, olen, "%s fold %d", in, fold);
		cr_assert_eq(memcmp(v, out, olen), 0, "%s fold %d", in, fold);
		n++;
	}
	return n;
}

/* The copy-free fast path (an already normal path, case folded or not)
 * gives what the full route gives, on every path of up to three segments
 * from the list, with and without a trailing '/'. */
Test(match, fast_path_is_the_full_route)
{
	static const char *const segs[] = {
		"a", "Bc", "..", ".", "", ";x", "a;b", ".b", "..c", "%41",
		"%2e", "%2F", "\xc3\xa9", "*", "A.B", "x%3b", "...",
	};
	const size_t nseg = sizeof(segs) / sizeof(segs[0]);
	int n = 0;

	for (size_t i = 0; i < (nseg + 1) * (nseg + 1) * (nseg + 1) * 2; i++) {
		size_t idx[3] = { i / 2 % (nseg + 1),
				  i / 2 / (nseg + 1) % (nseg + 1),
				  i / 2 / (nseg + 1) / (nseg + 1) };
		char in[64];
		size_t len = 0;

		for (int k = 0; k < 3; k++) {
			if (idx[k] == nseg)
				continue;       /* no segment here */
			in[len++] = '/';
			memcpy(in + len, segs[idx[k]], strlen(segs[idx[k]]));
			len += strlen(segs[idx[k]]);
		}
		if (len == 0 || i % 2)
			in[len++] = '/';
		in[len] = '\0';
		n += same_by_every_route(in, len);
	}
	cr_assert_gt(n, 5000);
}
