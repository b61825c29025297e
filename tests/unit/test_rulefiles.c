/*
 * test_rulefiles.c - every rule file kept under tests/rules/ and examples/:
 * good ones load with no warning; each bad one gives exactly the
 * diagnostics written beside it in NAME.expected (one per line, with
 * SRC standing for the tests/rules/bad directory).
 */
#include <criterion/criterion.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"

static const char *
srcdir(void)
{
	const char *s = getenv("top_srcdir");
	return s ? s : ".";
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	int c;

	cr_assert_not_null(f, "cannot open %s", path);
	while ((c = fgetc(f)) != EOF)
		fputc(c, m);
	fclose(f);
	fclose(m);
	return buf;
}

static void
each(const char *pattern, void (*fn)(const char *))
{
	char pat[4096];
	glob_t g;

	snprintf(pat, sizeof(pat), "%s/%s", srcdir(), pattern);
	cr_assert_eq(glob(pat, 0, NULL, &g), 0, "no files match %s", pat);
	for (size_t i = 0; i < g.gl_pathc; i++)
		fn(g.gl_pathv[i]);
	globfree(&g);
}

static void
good(const char *path)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_load(path, &fileio, &rep);

	cr_expect_not_null(rs, "%s: %s", path, rep.nerrors ? rep.errors[0] : "");
	cr_expect_eq(rep.nwarnings, 0, "%s: %s", path,
		     rep.nwarnings ? rep.warnings[0] : "");
	rl_report_free(&rep);
	rl_ruleset_free(rs);
}

static void
bad(const char *path)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_load(path, &fileio, &rep);
	char exp_path[4096], dir[4096];
	char *got = NULL;
	size_t glen = 0;
	FILE *m = open_memstream(&got, &glen);

	snprintf(exp_path, sizeof(exp_path), "%.*s.expected",
		 (int)(strlen(path) - 6), path);
	snprintf(dir, sizeof(dir), "%s", path);
	*strrchr(dir, '/') = '\0';
	cr_expect_null(rs, "%s loaded", path);
	for (size_t i = 0; i < rep.nerrors + rep.nwarnings; i++) {
		/* the directory differs between builds: write it as SRC */
		const char *e = i < rep.nerrors ? rep.errors[i] :
			rep.warnings[i - rep.nerrors];
		const char *hit;
		while ((hit = strstr(e, dir)) != NULL) {
			fprintf(m, "%.*sSRC", (int)(hit - e), e);
			e = hit + strlen(dir);
		}
		fprintf(m, "%s\n", e);
	}
	fclose(m);
	char *want = slurp(exp_path);
	cr_expect_str_eq(got, want, "%s", path);
	free(want);
	free(got);
	rl_report_free(&rep);
	rl_ruleset_free(rs);
}

Test(rulefiles, examples_load_cleanly)
{
	each("examples/*.rules", good);
	each("examples/rules/*.rules", good);
}

Test(rulefiles, good_files_load_cleanly)
{
	each("tests/rules/good/*.rules", good);
}

Test(rulefiles, bad_files_give_their_diagnostics)
{
	each("tests/rules/bad/*.rules", bad);
}
