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
#include <sys/stat.h>
#include <unistd.h>

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

/* A directory of a glob include that exists but cannot be read (a loop of
 * symbolic links; a directory this user may not read) is an error, not a
 * glob that matches nothing: its rules would be dropped with a warning.
 * A directory that does not exist still only warns. */
static char tmpdir[64];

static void
write_file(const char *name, const char *text)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

static struct rl_ruleset *
load_tmp(const char *name, struct rl_report *rep)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	return rl_ruleset_load(path, &fileio, rep);
}

static void
rm_tmpdir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s; rm -rf %s", tmpdir, tmpdir);
	if (system(cmd) != 0)
		cr_log_warn("cannot remove %s", tmpdir);
}

Test(rulefiles, unreadable_glob_directory_is_an_error, .fini = rm_tmpdir)
{
	struct rl_report rep;
	char path[256], want[512];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/rg-rulefiles-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/loop", tmpdir);
	cr_assert_eq(symlink("loop", path), 0);
	write_file("loop.rules", "/a 1/second\ninclude loop/*.rules\n");
	write_file("none.rules", "/a 1/second\ninclude nodir/*.rules\n");

	struct rl_ruleset *rs = load_tmp("loop.rules", &rep);
	cr_expect_null(rs);
	cr_assert_eq(rep.nerrors, 1);
	snprintf(want, sizeof(want),
		 "%s/loop.rules:2:9: cannot expand include \"%s/loop/*.rules\": %s/loop: Too many levels of symbolic links",
		 tmpdir, tmpdir, tmpdir);
	cr_expect_str_eq(rep.errors[0], want);
	rl_report_free(&rep);
	rl_ruleset_free(rs);

	rs = load_tmp("none.rules", &rep);
	cr_expect_not_null(rs);
	cr_assert_eq(rep.nwarnings, 1);
	snprintf(want, sizeof(want),
		 "%s/none.rules:2:9: warning: include \"%s/nodir/*.rules\" matches no file",
		 tmpdir, tmpdir);
	cr_expect_str_eq(rep.warnings[0], want);
	rl_report_free(&rep);
	rl_ruleset_free(rs);

	if (geteuid() == 0)
		return;         /* root reads any directory */
	snprintf(path, sizeof(path), "%s/sites", tmpdir);
	cr_assert_eq(mkdir(path, 0755), 0);
	write_file("sites/a.rules", "/secret 1/second\n");
	write_file("perm.rules", "/a 1/second\ninclude sites/*.rules\n");
	cr_assert_eq(chmod(path, 0), 0);
	rs = load_tmp("perm.rules", &rep);
	cr_expect_null(rs);
	cr_assert_eq(rep.nerrors, 1);
	snprintf(want, sizeof(want),
		 "%s/perm.rules:2:9: cannot expand include \"%s/sites/*.rules\": %s/sites: Permission denied",
		 tmpdir, tmpdir, tmpdir);
	cr_expect_str_eq(rep.errors[0], want);
	rl_report_free(&rep);
	rl_ruleset_free(rs);
}
