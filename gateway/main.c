/*
 * main.c - the rategate command: argument parsing and the sub-commands.
 *
 *   rategate -t -c FILE                 check a rule file and its includes
 *   rategate replay -c FILE [--summary] [LOG]
 *                                       decide a trace or access log
 *   rategate -V                         version
 *
 *   rategate -c FILE [-l LISTEN] [-j N] [-L LOGFILE]
 *                                       serve FastCGI: authorizer and
 *                                       responder (fcgi.c)
 *   rategate cgi -c FILE [SCRIPT]       CGI wrapper (wrapper.c); also when
 *                                       started with no arguments by a web
 *                                       server as a CGI program with
 *                                       RATEGATE_CONFIG in the environment
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fcgi.h"
#include "fileio.h"
#include "inspect.h"
#include "replay.h"
#include "store_redis.h"
#include "store_shm.h"
#include "wrapper.h"

/* After a usage error's own line: where the options are (the whole help
 * would bury that line). */
static void
usage_hint(void)
{
	fputs("rategate --help lists the commands and options\n", stderr);
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: rategate -c FILE [-l LISTEN] [-M MODE] [-U USER[:GROUP]] [-j N] [-L LOGFILE]\n"
		"       rategate -t -c FILE\n"
		"       rategate replay -c FILE [--summary | --verbose] [LOG]\n"
		"       rategate inspect (-c FILE | --store PATH) [--stats] [--top N]\n"
		"                        [--client TEXT] [--reset TEXT] [--now MS]\n"
		"       rategate cgi -c FILE [SCRIPT]\n"
		"       rategate -V | --version, -h | --help\n"
		"\n"
		"  -t            check FILE and everything it includes, print a summary\n"
		"  -c FILE       the rule file\n"
		"  (no -t)       serve FastCGI (authorizer and responder): on LISTEN, else on the\n"
		"                socket inherited on fd 0 (lighttpd bin-path, spawn-fcgi),\n"
		"                else on the rules' \"listen\"\n"
		"  -l LISTEN     /path/to.sock, unix:/path/to.sock (mode 0660),\n"
		"                127.0.0.1:PORT or [::1]:PORT\n"
		"  -M MODE       the unix socket's mode, octal (e.g. 0666)\n"
		"  -U USER[:GROUP] the unix socket's owner (e.g. www-data:www-data; :GROUP\n"
		"                the group only)\n"
		"  -j N          requests with the application at once, and worker threads\n"
		"                started (default 4; more workers while all are busy, up to 256)\n"
		"  -L LOGFILE    append log lines to LOGFILE instead of standard error\n"
		"  replay        decide each request of LOG (a trace or a combined\n"
		"                access log; standard input when absent or \"-\") on\n"
		"                a virtual clock and print: index, allow|deny, limit,\n"
		"                remaining, retry-after seconds\n"
		"  --summary     with replay: the clients and paths that would have\n"
		"                been limited, most-limited first\n"
		"  --verbose     with replay: each line also says rule=PATTERN and\n"
		"                origin=rule|default|application (which limits decided)\n"
		"  inspect       look inside the shared-memory store (or Redis): --stats,\n"
		"                --top N keys, --client TEXT's counters, --reset TEXT\n"
		"  --store PATH  with inspect: the store file itself, without rules\n"
		"  cgi           run as a CGI program: decide on the request in the\n"
		"                environment, print the denial or exec SCRIPT (else\n"
		"                the rules' upstream cgi:/path); rategate with no\n"
		"                arguments, GATEWAY_INTERFACE (set by the web server)\n"
		"                and RATEGATE_CONFIG=FILE in the environment the same\n"
		"\n"
		"See rategate(8) and rategate.rules(5).\n");
}

/* An option with a value: argv[*i] is name.  Takes argv[*i + 1] into
 * *dst and returns 1; or says what is wrong (no value, given twice) and
 * returns -1, the caller then exits 2. */
static int
opt_value(int argc, char **argv, int *i, const char *prog, const char **dst)
{
	const char *name = argv[*i];

	if (*i + 1 >= argc) {
		fprintf(stderr, "%s: %s needs a value (%s)\n", prog, name,
			strcmp(name, "-c") == 0 ? "the rule file" :
			strcmp(name, "-j") == 0 ? "a number of worker threads" :
			strcmp(name, "-l") == 0 ? "a socket: /path, 127.0.0.1:PORT" :
			strcmp(name, "-L") == 0 ? "a log file" :
			strcmp(name, "-M") == 0 ? "an octal mode such as 0660" :
			strcmp(name, "-U") == 0 ? "USER[:GROUP]" : "see --help");
		return -1;
	}
	if (*dst != NULL) {
		fprintf(stderr, "%s: %s given twice (\"%s\" and \"%s\")\n", prog,
			name, *dst, argv[*i + 1]);
		return -1;
	}
	*dst = argv[++*i];
	return 1;
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

/* The gateway's part of -t: the upstreams a rule set names (a CGI program
 * must be an executable file; a unix socket that does not exist yet is
 * only a warning, the application may start later) and the store
 * (check_shm).  Returns the number of errors. */
static int
check_upstream(const struct rl_upstream *u)
{
	struct stat sb;

	if (u == NULL)
		return 0;
	if (u->kind == RL_UPSTREAM_CGI) {
		if (stat(u->path, &sb) != 0 || !S_ISREG(sb.st_mode) ||
		    access(u->path, X_OK) != 0) {
			fprintf(stderr, "%s:%u:%zu: upstream %s: %s\n", u->file,
				u->line, u->col + 1, u->uri,
				stat(u->path, &sb) != 0 ? strerror(errno)
				: !S_ISREG(sb.st_mode) ? "not a regular file"
				: "not executable");
			return 1;
		}
	} else if (u->kind == RL_UPSTREAM_FCGI_UNIX) {
		if (stat(u->path, &sb) != 0 || !S_ISSOCK(sb.st_mode))
			fprintf(stderr, "%s:%u:%zu: warning: upstream %s: %s (the application is not running yet?)\n",
				u->file, u->line, u->col + 1, u->uri,
				stat(u->path, &sb) != 0 ? strerror(errno) : "not a socket");
	}
	return 0;
}

/* The start of a message about the store: the storage line's place, or
 * for the default storage (no line to point at) the file and what the
 * default is. */
static void
storage_place(const char *file, const struct rl_settings *s)
{
	if (s->storage.file != NULL)
		fprintf(stderr, "%s:%u:%zu: ", s->storage.file, s->storage.line,
			s->storage.col + 1);
	else
		fprintf(stderr, "rategate: %s: the default storage %s: ", file,
			s->storage.shown);
}

/* The store of `storage shm:` as the gateway would open it.  When the file
 * exists it is checked the way opening checks it (read-only: gateways may
 * be using it), and a file that opening would refuse is an error, not a
 * warning: -t answers "will rategate start with these rules?", and it
 * would not; the message is the one the gateway would stop with, and says
 * what to do (deleting the file loses its counters, which is the
 * administrator's call to make, before the restart rather than after a
 * failed one).  So is a file this user may not read and write (a gateway
 * running as this user would stop on it); one that cannot be read for
 * another reason is only a warning.  Prints the geometry line unless quiet (other errors);
 * returns the number of errors. */
static int
check_shm(const char *file, const struct rl_settings *s,
	  const struct rl_ruleset *rs, int quiet)
{
	struct shm_config c;
	struct shm_plan p;
	uint64_t keys;
	char err[1024], state[64], each[64];

	store_shm_config(rs, &c);
	switch (shm_probe_file(&c, &p, &keys, err, sizeof(err))) {
	case SHM_PROBE_REFUSED:
		storage_place(file, s);
		fprintf(stderr, "%s\n", err);
		return 1;
	case SHM_PROBE_UNREADABLE:
		storage_place(file, s);
		fprintf(stderr, "warning: %s: the existing file is not checked against these rules\n",
			err);
		return 0;
	case SHM_PROBE_NEW:
		snprintf(state, sizeof(state), "to be created");
		break;
	case SHM_PROBE_FITS:
		snprintf(state, sizeof(state), "exists, %llu key%s held",
			 (unsigned long long)keys, keys == 1 ? "" : "s");
		break;
	}
	if (quiet)
		return 0;       /* -t failed elsewhere: no "ok" geometry */
	if (p.entry_bytes > SHM_ENTRY_BYTES)
		snprintf(each, sizeof(each), "%u bytes each with its name", p.entry_bytes);
	else
		snprintf(each, sizeof(each), "%u bytes each, names off", p.entry_bytes);
	printf("rategate: storage %s: file %s (%s), %llu bytes: %llu counter slots (%s, %.0f with its share of the pools, locks and header), moving windows up to %llu hits in %llu slots, concurrency up to %llu in %llu slots, %u stripes\n",
	       s->storage.shown, c.path, state, (unsigned long long)c.size,
	       (unsigned long long)p.slots, each, p.bytes_per_key,
	       (unsigned long long)p.max_moving, (unsigned long long)p.ring_slots,
	       (unsigned long long)p.max_leases, (unsigned long long)p.lease_slots,
	       p.stripes);
	return 0;
}

/* With storage redis and store-failure fallback, the gateway opens the
 * fallback's shm file at start, checked as a shm store's file is: a file
 * it would refuse (its slots too small for the rules, another size) stops
 * the start, so it is an error here too.  Returns the number of errors. */
static int
check_fallback(const char *file, const struct rl_settings *s,
	       const struct rl_ruleset *rs)
{
	struct redis_config rc;
	struct shm_plan p;
	uint64_t keys;
	char err[1024];

	if (s->storage.kind != RL_STORAGE_REDIS ||
	    s->store_failure != RL_STORE_FAIL_FALLBACK)
		return 0;
	store_redis_config(rs, &rc);
	switch (shm_probe_file(&rc.fallback, &p, &keys, err, sizeof(err))) {
	case SHM_PROBE_REFUSED:
		storage_place(file, s);
		fprintf(stderr, "store-failure fallback: %s\n", err);
		return 1;
	case SHM_PROBE_UNREADABLE:
		storage_place(file, s);
		fprintf(stderr, "warning: store-failure fallback: %s: the existing file is not checked against these rules\n",
			err);
		return 0;
	default:
		return 0;
	}
}

static int
check(const char *file)
{
	struct rl_ruleset *rs = fileio_load_rules(file, 1);
	char d[600], a[600];
	int errors = 0;

	if (rs == NULL) {
		fprintf(stderr, "rategate: %s: rules not loaded\n", file);
		return 1;
	}
	const struct rl_settings *s = rl_ruleset_settings(rs);
	/* A reload refuses an empty file (fcgi.c, reload: a save caught
	 * half-way), and the systemd unit's ExecReload runs -t first: -t
	 * must not pass what the reload then refuses.  (A start takes it,
	 * with the nothing-is-limited warning.) */
	struct stat sb;
	if (stat(file, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size == 0) {
		fprintf(stderr, "rategate: %s: the file is empty: a reload refuses it (a save caught half-way?); write \"enabled off\" to run without limits on purpose\n",
			file);
		errors++;
	}
	errors += check_upstream(s->upstream);
	for (size_t i = 0; i < rl_ruleset_nrules(rs); i++)
		errors += check_upstream(rl_ruleset_rule(rs, i)->upstream);
	if (s->storage.kind == RL_STORAGE_SHM)
		errors += check_shm(file, s, rs, errors > 0);
	else if (s->storage.kind == RL_STORAGE_MEMORY)
		printf("rategate: storage memory: counters are private to each rategate process (one process per site; refused in CGI wrapper mode)\n");
	errors += check_fallback(file, s, rs);
	if (errors) {
		fprintf(stderr, "rategate: %s: %d error%s in the gateway settings\n", file,
			errors, errors == 1 ? "" : "s");
		rl_ruleset_free(rs);
		return 1;
	}
	limits_text(d, sizeof(d), s->defaults, s->ndefaults);
	limits_text(a, sizeof(a), s->application, s->napplication);
	char ex[48] = "";
	if (s->nexempt_clients > 0)
		snprintf(ex, sizeof(ex), "; exempt clients in %zu network%s",
			 s->nexempt_clients, s->nexempt_clients == 1 ? "" : "s");
	printf("rategate: %s: ok: %zu rule%s in %zu file%s; default \"%s\"; application \"%s\"; strategy %s; storage %s%s%s\n",
	       file, rl_ruleset_nrules(rs), rl_ruleset_nrules(rs) == 1 ? "" : "s",
	       rl_ruleset_nfiles(rs), rl_ruleset_nfiles(rs) == 1 ? "" : "s", d, a,
	       rl_strategy_name(s->strategy), s->storage.shown, ex,
	       s->enabled ? "" : "; DISABLED (enabled off)");
	rl_ruleset_free(rs);
	return 0;
}

static int
replay(int argc, char **argv)
{
	const char *conf = NULL, *log = NULL;
	int flags = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0) {
			if (opt_value(argc, argv, &i, "rategate replay", &conf) < 0)
				return 2;
		} else if (strcmp(argv[i], "--summary") == 0)
			flags |= REPLAY_SUMMARY;
		else if (strcmp(argv[i], "--verbose") == 0)
			flags |= REPLAY_VERBOSE;
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}
		else if (argv[i][0] == '-' && argv[i][1] != '\0') {
			fprintf(stderr, "rategate replay: unknown option \"%s\"\n", argv[i]);
			usage_hint();
			return 2;
		} else if (log == NULL)
			log = argv[i];
		else {
			fprintf(stderr, "rategate replay: one log at a time (\"%s\")\n", argv[i]);
			return 2;
		}
	}
	if (flags == (REPLAY_SUMMARY | REPLAY_VERBOSE)) {
		fprintf(stderr, "rategate replay: --summary and --verbose are exclusive: give one\n");
		return 2;
	}
	if (conf == NULL) {
		fprintf(stderr, "rategate replay: -c FILE is required\n");
		usage_hint();
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
	int r = replay_run(rs, in, log ? log : "-", flags, stdout, stderr);
	if (in != stdin)
		fclose(in);
	rl_ruleset_free(rs);
	if (fflush(stdout) != 0)
		r = 1;
	return r;
}

/* The arguments of `cgi -c FILE [SCRIPT]` (argv[0] is "cgi"): *conf and
 * *script (NULL when absent; the last -c counts).  Returns CGI_ARGS_OK, or
 * what is wrong with *bad the argument at fault. */
enum cgi_args { CGI_ARGS_OK, CGI_ARGS_OPTION, CGI_ARGS_SCRIPTS, CGI_ARGS_NO_CONF };

static enum cgi_args
cgi_args(int argc, char **argv, const char **conf, const char **script,
	 const char **bad)
{
	*conf = *script = *bad = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*conf = argv[++i];
		} else if (strcmp(argv[i], "-c") == 0) {
			return CGI_ARGS_NO_CONF;
		} else if (argv[i][0] == '-' || *script != NULL) {
			*bad = argv[i];
			return argv[i][0] == '-' ? CGI_ARGS_OPTION : CGI_ARGS_SCRIPTS;
		} else {
			*script = argv[i];
		}
	}
	return *conf == NULL ? CGI_ARGS_NO_CONF : CGI_ARGS_OK;
}

static int
cgi(int argc, char **argv)
{
	const char *conf, *script, *bad;

	switch (cgi_args(argc, argv, &conf, &script, &bad)) {
	case CGI_ARGS_OK:
		return wrapper_main(conf, script);
	case CGI_ARGS_OPTION:
		fprintf(stderr, "rategate cgi: unknown option \"%s\"\n", bad);
		usage_hint();
		return 2;
	case CGI_ARGS_SCRIPTS:
		fprintf(stderr, "rategate cgi: one script (\"%s\")\n", bad);
		return 2;
	case CGI_ARGS_NO_CONF:
		break;
	}
	fprintf(stderr, "rategate cgi: -c FILE is required (-c needs the rule file)\n");
	return 2;
}

/* One %XX-decoded word of a query, as Apache's ap_unescape_url does it
 * (an invalid escape is kept as it is; %00 ends the word). */
static void
decode_word(char *w)
{
	char *o = w;

	for (const char *i = w; *i != '\0'; i++) {
		int hi, lo;
		if (i[0] == '%' && (hi = rl_hex_value((unsigned char)i[1])) >= 0 &&
		    (lo = rl_hex_value((unsigned char)i[2])) >= 0) {
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else
			*o++ = *i;
	}
	*o = '\0';
}

/* a equals w once a's backslash escapes are removed (ap_escape_shell_cmd
 * puts a '\' before each shell metacharacter). */
static int
same_word(const char *a, const char *w)
{
	for (;; a++, w++) {
		if (a[0] == '\\' && a[1] != '\0')
			a++;
		if (*a != *w)
			return 0;
		if (*a == '\0')
			return 1;
	}
}

/* What a CGI invocation's command line asks for, the way main() reads
 * it: the environment's rules alone (no argument), the interpreter form
 * (the one argument is SCRIPT_FILENAME), or `cgi -c FILE [SCRIPT]`. */
enum cgi_form { CGI_FORM_NONE, CGI_FORM_ENV, CGI_FORM_INTERP, CGI_FORM_CGI };

static enum cgi_form
cgi_form(int argc, char **argv)
{
	const char *sf = getenv("SCRIPT_FILENAME"), *conf, *script, *bad;

	if (argc == 1)
		return getenv("RATEGATE_CONFIG") != NULL ? CGI_FORM_ENV : CGI_FORM_NONE;
	if (argc == 2 && getenv("RATEGATE_CONFIG") != NULL && sf != NULL &&
	    strcmp(sf, argv[1]) == 0)
		return CGI_FORM_INTERP;
	if (strcmp(argv[1], "cgi") != 0 ||
	    cgi_args(argc - 1, argv + 1, &conf, &script, &bad) != CGI_ARGS_OK)
		return CGI_FORM_NONE;
	return CGI_FORM_CGI;
}

/* Apache's mod_cgi and mod_cgid pass a query string without '=' to a CGI
 * program as arguments after those of the server's configuration (the
 * ISINDEX convention): split at '+', empty words kept, each
 * %-decoded and shell-escaped, at most APACHE_ARG_MAX - 1 words counted.
 * They are the client's, never options, a sub-command or a script to run
 * ("/app/x?/bin/sh" must not make rategate exec /bin/sh): when the last
 * arguments are exactly the query's words, they are dropped.  Returns the
 * new argc, or -1 when that is ambiguous (below). */
static int
drop_query_words(int argc, char **argv)
{
	const char *q = getenv("QUERY_STRING");
#ifdef _POSIX_ARG_MAX
	const size_t max_words = _POSIX_ARG_MAX - 1;
#else
	const size_t max_words = 511;
#endif

	if (argc < 2 || getenv("GATEWAY_INTERFACE") == NULL || q == NULL || q[0] == '\0' ||
	    strchr(q, '=') != NULL)
		return argc;
	char *copy = strdup(q);
	if (copy == NULL)
		return argc;
	size_t nw = 0, counted = 0;
	char **words = calloc(strlen(q) + 1, sizeof(*words));
	if (words == NULL) {
		free(copy);
		return argc;
	}
	for (char *p = copy; p != NULL && counted < max_words; counted++) {
		char *plus = strchr(p, '+');
		if (plus != NULL)
			*plus = '\0';
		/* empty words too: Apache 2.4 keeps them (ap_getword_nulls):
		 * "?a++b" gives "a", "", "b" */
		decode_word(p);
		words[nw++] = p;
		p = plus != NULL ? plus + 1 : NULL;
	}
	/* Apache passes at most 4094 words (mod_cgi) or 4091 (mod_cgid):
	 * with more in the query it passed fewer than were counted, and
	 * which of the arguments are the client's cannot be told */
	if (nw >= 4091) {
		free(words);
		free(copy);
		return -1;
	}
	int keep = argc;
	if (nw > 0 && nw <= (size_t)argc - 1) {
		keep = argc - (int)nw;
		for (size_t i = 0; i < nw; i++)
			if (!same_word(argv[keep + (int)i], words[i])) {
				keep = argc;
				break;
			}
	}
	free(words);
	free(copy);
	/* The words may also be the configuration's own last arguments that a
	 * client repeated in its query ("exec rategate cgi -c R S" without
	 * "$@", asked for "?S"): dropping them would change the script.  When
	 * the command line means something whole as well as without them,
	 * nobody can tell which it is: refused (-1). */
	if (keep < argc && cgi_form(argc, argv) != CGI_FORM_NONE &&
	    cgi_form(keep, argv) != CGI_FORM_NONE)
		return -1;
	return keep;
}

int
main(int argc, char **argv)
{
	const char *conf = NULL;
	int test = 0;
	struct fcgi_options fo = { NULL, NULL, NULL, NULL, NULL, NULL };

	argc = drop_query_words(argc, argv);
	if (argc < 0) {
		fprintf(stderr, "rategate: CGI wrapper: the last arguments of the command line are the words of the query string, and the command line means something with and without them: refused (give the script with upstream cgi: or keep the query out of the command line)\n");
		return wrapper_refuse();
	}
	argv[argc] = NULL;
	if (argc > 1 && strcmp(argv[1], "replay") == 0)
		return replay(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "inspect") == 0)
		return inspect_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "cgi") == 0)
		return cgi(argc - 1, argv + 1);
	/* Started by a web server as a CGI program (ScriptAlias, cgi.assign)
	 * with the rules named in the environment. */
	if (argc == 1 && getenv("GATEWAY_INTERFACE") != NULL &&
	    getenv("RATEGATE_CONFIG") != NULL)
		return wrapper_main(getenv("RATEGATE_CONFIG"), NULL);
	/* ... or as the interpreter of a script (lighttpd cgi.assign =
	 * ( ".cgi" => "/usr/local/bin/rategate" )): the one
	 * argument is the script to run once allowed. */
	if (argc == 2 && getenv("GATEWAY_INTERFACE") != NULL &&
	    getenv("RATEGATE_CONFIG") != NULL) {
		/* Only the script the server itself names (SCRIPT_FILENAME):
		 * never an argument a client could have put there. */
		const char *sf = getenv("SCRIPT_FILENAME");
		if (sf == NULL || strcmp(sf, argv[1]) != 0) {
			fprintf(stderr, "rategate: CGI wrapper: argument \"%.200s\" is not SCRIPT_FILENAME: refused\n",
				argv[1]);
			return wrapper_refuse();
		}
		return wrapper_main(getenv("RATEGATE_CONFIG"), argv[1]);
	}
	for (int i = 1; i < argc; i++) {
		static const char *const valued[] = { "-c", "-j", "-l", "-L", "-M", "-U" };
		const char **dst[] = { &conf, &fo.workers, &fo.listen, &fo.log,
				       &fo.mode, &fo.owner };
		size_t k = 0;
		while (k < 6 && strcmp(argv[i], valued[k]) != 0)
			k++;
		if (k < 6) {
			if (opt_value(argc, argv, &i, "rategate", dst[k]) < 0)
				return 2;
		} else if (strcmp(argv[i], "-t") == 0)
			test = 1;
		else if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
			printf("rategate %s\n", PACKAGE_VERSION);
			return 0;
		} else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "rategate: unknown argument \"%s\"\n", argv[i]);
			usage_hint();
			return 2;
		}
	}
	/* A process manager that passes no arguments (mod_fcgid's
	 * FcgidInitialEnv; spawn-fcgi passes its environment on) can name
	 * the rules in the environment. */
	if (conf == NULL)
		conf = getenv("RATEGATE_CONFIG");
	if (conf == NULL) {
		fprintf(stderr, "rategate: no rule file: give -c FILE (or RATEGATE_CONFIG=FILE in the environment)\n");
		usage_hint();
		return 2;
	}
	/* The options' syntax is checked before anything else, -t included:
	 * a command line that -t passes must not fail at the start. */
	char oerr[256];
	if (fcgi_check_options(&fo, oerr, sizeof(oerr)) != 0) {
		fprintf(stderr, "rategate: %s\n", oerr);
		return 2;
	}
	if (test)
		return check(conf);
	fo.rules = conf;
	return fcgi_main(&fo);
}
