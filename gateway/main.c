/*
 * main.c - the rategate command: argument parsing and the sub-commands.
 *
 *   rategate -t -c FILE                 check a rule file and its includes
 *   rategate replay -c FILE [--summary] [LOG]
 *                                       decide a trace or access log
 *   rategate -V                         version
 *
 *   rategate -c FILE [-l LISTEN] [-j N] [-L LOGFILE]
 *                                       serve as a FastCGI authorizer (fcgi.c)
 *
 * The responder and CGI wrapper modes are still to come.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fcgi.h"
#include "fileio.h"
#include "inspect.h"
#include "replay.h"

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: rategate -c FILE [-l LISTEN] [-j N] [-L LOGFILE]\n"
		"       rategate -t -c FILE\n"
		"       rategate replay -c FILE [--summary] [LOG]\n"
		"       rategate inspect -c FILE [--stats] [--top N] [--client TEXT] [--reset TEXT]\n"
		"       rategate -V\n"
		"\n"
		"  -t            check FILE and everything it includes, print a summary\n"
		"  -c FILE       the rule file\n"
		"  (no -t)       serve as a FastCGI authorizer: on LISTEN, else on the\n"
		"                socket inherited on fd 0 (lighttpd bin-path, spawn-fcgi),\n"
		"                else on the rules' \"listen\"\n"
		"  -l LISTEN     /path/to.sock, unix:/path/to.sock (mode 0660),\n"
		"                127.0.0.1:PORT or [::1]:PORT\n"
		"  -j N          worker threads (default 4)\n"
		"  -L LOGFILE    append log lines to LOGFILE instead of standard error\n"
		"  replay        decide each request of LOG (a trace or a combined\n"
		"                access log; standard input when absent or \"-\") on\n"
		"                a virtual clock and print: index, allow|deny, limit,\n"
		"                remaining, retry-after seconds\n"
		"  --summary     with replay: the clients and paths that would have\n"
		"                been limited, most-limited first\n");
}

static void
limits_text(char *buf, size_t cap, const struct rl_limit *l, size_t n)
{
	size_t pos = 0;

	buf[0] = '\0';
	if (n == 0)
		snprintf(buf, cap, "none");
	for (size_t i = 0; i < n && pos < cap; i++)
		pos += (size_t)snprintf(buf + pos, cap - pos, "%s%s",
					i ? "; " : "", l[i].text);
}

static int
check(const char *file)
{
	struct rl_ruleset *rs = fileio_load_rules(file, 1);
	char d[600], a[600];

	if (rs == NULL) {
		fprintf(stderr, "rategate: %s: rules not loaded\n", file);
		return 1;
	}
	const struct rl_settings *s = rl_ruleset_settings(rs);
	limits_text(d, sizeof(d), s->defaults, s->ndefaults);
	limits_text(a, sizeof(a), s->application, s->napplication);
	printf("rategate: %s: ok: %zu rule%s in %zu file%s; default \"%s\"; application \"%s\"; strategy %s; storage %s%s\n",
	       file, rl_ruleset_nrules(rs), rl_ruleset_nrules(rs) == 1 ? "" : "s",
	       rl_ruleset_nfiles(rs), rl_ruleset_nfiles(rs) == 1 ? "" : "s", d, a,
	       rl_strategy_name(s->strategy), s->storage.uri,
	       s->enabled ? "" : "; DISABLED (enabled off)");
	rl_ruleset_free(rs);
	return 0;
}

static int
replay(int argc, char **argv)
{
	const char *conf = NULL, *log = NULL;
	int summary = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			conf = argv[++i];
		else if (strcmp(argv[i], "--summary") == 0)
			summary = 1;
		else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			fprintf(stderr, "rategate replay: unknown option \"%s\"\n", argv[i]);
			usage(stderr);
			return 2;
		} else if (log == NULL)
			log = argv[i];
		else {
			fprintf(stderr, "rategate replay: one log at a time (\"%s\")\n", argv[i]);
			return 2;
		}
	}
	if (conf == NULL) {
		fprintf(stderr, "rategate replay: -c FILE is required\n");
		usage(stderr);
		return 2;
	}
	struct rl_ruleset *rs = fileio_load_rules(conf, 0);
	if (rs == NULL) {
		fprintf(stderr, "rategate: %s: rules not loaded\n", conf);
		return 1;
	}
	FILE *in = stdin;
	if (log != NULL && strcmp(log, "-") != 0) {
		in = fopen(log, "r");
		if (in == NULL) {
			fprintf(stderr, "rategate replay: %s: %s\n", log, strerror(errno));
			rl_ruleset_free(rs);
			return 1;
		}
	}
	int r = replay_run(rs, in, log ? log : "-", summary, stdout, stderr);
	if (in != stdin)
		fclose(in);
	rl_ruleset_free(rs);
	if (fflush(stdout) != 0)
		r = 1;
	return r;
}

int
main(int argc, char **argv)
{
	const char *conf = NULL;
	int test = 0;
	struct fcgi_options fo = { NULL, NULL, NULL, NULL };

	if (argc > 1 && strcmp(argv[1], "replay") == 0)
		return replay(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "inspect") == 0)
		return inspect_main(argc - 1, argv + 1);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-t") == 0)
			test = 1;
		else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			conf = argv[++i];
		else if (strcmp(argv[i], "-j") == 0 && i + 1 < argc)
			fo.workers = argv[++i];
		else if (strcmp(argv[i], "-l") == 0 && i + 1 < argc)
			fo.listen = argv[++i];
		else if (strcmp(argv[i], "-L") == 0 && i + 1 < argc)
			fo.log = argv[++i];
		else if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
			printf("rategate %s\n", PACKAGE_VERSION);
			return 0;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "rategate: unknown argument \"%s\"\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (conf == NULL) {
		usage(stderr);
		return 2;
	}
	if (test)
		return check(conf);
	fo.rules = conf;
	return fcgi_main(&fo);
}
