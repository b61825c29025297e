/*
 * wrapper.c - the CGI wrapper mode: rategate runs as the CGI program the
 * web server starts for each request, decides, and then either prints the
 * denial (a CGI response on standard output) or replaces itself with the
 * wrapped script (execve: one exec, nothing in between, the script
 * inherits standard input with the request body untouched and writes its
 * own response).
 *
 * Every invocation is a new process, so the counters must outlive it: the
 * shared-memory store (the default) keeps them; `storage memory` would
 * give every request a fresh budget and is refused.
 *
 * What the wrapper cannot do, since it is gone once the script runs:
 * deduct-when (it never sees the response), concurrency= (nothing would
 * release the slot), counting a chunked body, or adding X-RateLimit-*
 * headers to an allowed response.  A deduct-when rule is counted as a
 * plain rule here; a concurrency= rule's slots are not enforced (its other
 * limits apply); both are said in the log on every run (each run is a
 * process of its own).
 * max-body works from CONTENT_LENGTH.  The facts of the decision reach the
 * script as RL_CLIENT, RL_RULE, RL_LIMIT, RL_REMAINING, RL_RESET.  As in
 * the responder's CGI back end, the script runs in its own directory with
 * SCRIPT_FILENAME set to its absolute path (the web server's value names
 * the program it started, which may be rategate itself).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fcgi.h"
#include "fileio.h"
#include "log.h"
#include "respond.h"
#include "store.h"
#include "wrapper.h"

extern char **environ;

/* The HTTP status line our answers begin with when the web server runs
 * us as a non-parsed-header program, or NULL (see nph_status_line). */
static const char *nph_proto;

/* Write len bytes of p to standard output. */
static void
write_all(const char *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t w = write(1, p + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

/* Write all of b to standard output: a CGI answer ("Status: 429 ..."), or
 * for a non-parsed-header program the HTTP response the web server sends
 * on as it is ("HTTP/1.1 429 ...", and the connection closes with it). */
static void
put_out(const struct respond_buf *b)
{
	static const char status[] = "Status: ", close_line[] = "Connection: close\r\n";

	if (nph_proto == NULL || b->len < sizeof(status) - 1 ||
	    memcmp(b->data, status, sizeof(status) - 1) != 0) {
		write_all(b->data, b->len);
		return;
	}
	const char *rest = b->data + sizeof(status) - 1;
	const char *eol = memchr(rest, '\n', b->len - (sizeof(status) - 1));
	size_t first = eol != NULL ? (size_t)(eol + 1 - rest) : b->len - (sizeof(status) - 1);
	write_all(nph_proto, strlen(nph_proto));
	write_all(" ", 1);
	write_all(rest, first);
	write_all(close_line, sizeof(close_line) - 1);
	write_all(rest + first, b->len - (sizeof(status) - 1) - first);
}

/* Apache's mod_cgi and mod_cgid run a program whose file name begins with
 * "nph-" as a non-parsed-header program: what it prints goes to the client
 * unread, so it must be a whole HTTP response.  The sh-script form
 * ("rategate cgi -c RULES SCRIPT" where the real script was) takes the
 * real script's name, nph- included, and so does its SCRIPT_FILENAME.  The
 * protocol is the client's (SERVER_PROTOCOL), HTTP/1.0 when unknown.
 * Apache only (SERVER_SOFTWARE): lighttpd reads a Status line whatever
 * the name, and nginx, behind fcgiwrap, would take an HTTP status line for
 * a header and send the 429 as a 200. */
static void
nph_status_line(void)
{
	const char *sf = getenv("SCRIPT_FILENAME");
	const char *proto = getenv("SERVER_PROTOCOL");
	const char *sw = getenv("SERVER_SOFTWARE");

	if (sf == NULL || sw == NULL || strncmp(sw, "Apache", 6) != 0)
		return;
	const char *base = strrchr(sf, '/');
	if (strncmp(base != NULL ? base + 1 : sf, "nph-", 4) != 0)
		return;
	nph_proto = proto != NULL && strcmp(proto, "HTTP/1.1") == 0 ? "HTTP/1.1" : "HTTP/1.0";
}

/* Read and discard the request body once we have answered ourselves.
 * Apache's mod_cgid gives the CGI program one unix socket as standard input
 * and output, and writes the whole body before it reads the answer; a
 * process that exits with unread data in that socket makes Linux reset it,
 * and Apache then loses the answer already written (the client gets a
 * truncated or an empty reply).  fcgiwrap (nginx) does the same over a
 * pipe: it writes the whole body before it reads the answer, and a write
 * that fails (EPIPE: the program is gone with more than a pipe's 64 KiB
 * still to come) makes it drop the answer and send its own 502.  lighttpd
 * just stops sending; draining costs it only the reads.  So a socket or a
 * pipe is drained (a file, or /dev/null, needs nothing), when the request
 * has a body (CONTENT_LENGTH, or Transfer-Encoding for Apache's chunked
 * uploads): at most CONTENT_LENGTH bytes (to end-of-file without it), for
 * at most 30 s, waiting at most 2 s for each read: Apache would read
 * (soak) the rest from the client anyway. */
static void
drain_stdin(void)
{
	struct stat sb;
	const char *cl = getenv("CONTENT_LENGTH");
	const char *te = getenv("HTTP_TRANSFER_ENCODING");
	unsigned long long left = ULLONG_MAX;
	char buf[16384];

	if ((cl == NULL || cl[0] == '\0') && (te == NULL || te[0] == '\0'))
		return;         /* no body: nothing the server waits to write */
	if (fstat(0, &sb) != 0 || (!S_ISSOCK(sb.st_mode) && !S_ISFIFO(sb.st_mode)))
		return;
	if (cl != NULL && cl[0] != '\0') {
		char *end;
		errno = 0;
		left = strtoull(cl, &end, 10);
		if (errno != 0 || *end != '\0')
			left = ULLONG_MAX;
	}
	int64_t end = clock_wall_ms() + 30000;
	while (left > 0) {
		int64_t now = clock_wall_ms();
		if (now >= end)
			return;
		struct pollfd p = { 0, POLLIN, 0 };
		int r = poll(&p, 1, end - now < 2000 ? (int)(end - now) : 2000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		ssize_t n = read(0, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return;
		left -= (unsigned long long)n;
	}
}

/* An answer of ours with status, printed; returns the exit status (0: the
 * web server got a proper response). */
static int
fail(struct respond_buf *b, int status, const char *code, const char *msg,
     enum respond_format f)
{
	respond_error(b, status, 0, code, msg, f);
	put_out(b);
	return 0;
}

int
wrapper_refuse(void)
{
	struct respond_buf out;
	const char *accept = getenv("HTTP_ACCEPT");

	respond_buf_init(&out);
	nph_status_line();
	int status = fail(&out, 500, "internal_error", "Internal Server Error",
			  respond_negotiate(accept, accept ? strlen(accept) : 0));
	drain_stdin();
	respond_buf_free(&out);
	return status;
}

static void
set_env(const char *name, const char *value)
{
	if (value != NULL && value[0] != '\0')
		setenv(name, value, 1);
}

/* path is the file self describes. */
static int
is_self(const char *path, const struct stat *self)
{
	struct stat st;

	return stat(path, &st) == 0 && st.st_dev == self->st_dev &&
	       st.st_ino == self->st_ino;
}

/* Whether running path would run rategate again: path is this program,
 * or a script whose "#!" line names it.  The kernel would start rategate
 * with the script as its argument, rategate would decide and run the
 * script again, and so on, each round counting a hit.  (A "#!" script
 * cannot use rategate as its interpreter: rategate needs something else
 * to run once the request is allowed.) */
static int
runs_rategate_again(const char *path)
{
	struct stat self;
	char head[256];

	if (stat("/proc/self/exe", &self) != 0)
		return 0;
	if (is_self(path, &self))
		return 1;
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return 0;
	size_t n = fread(head, 1, sizeof(head) - 1, f);
	fclose(f);
	head[n] = '\0';
	if (n < 3 || head[0] != '#' || head[1] != '!')
		return 0;
	/* the interpreter; for "#!/usr/bin/env [-S] [-i] [-u NAME]
	 * [NAME=VALUE] rategate", the program env runs */
	char *p = head + 2;
	int first = 1;
	head[strcspn(head, "\r\n")] = '\0';
	for (;;) {
		p += strspn(p, " \t");
		if (*p == '\0')
			return 0;
		char *w = p;
		p += strcspn(p, " \t");
		if (*p != '\0')
			*p++ = '\0';
		if (first) {
			const char *base = strrchr(w, '/');
			if (is_self(w, &self))
				return 1;
			if (strcmp(base != NULL ? base + 1 : w, "env") != 0)
				return 0;       /* a real interpreter */
			first = 0;
			continue;
		}
		if (strncmp(w, "-S", 2) == 0 && w[2] != '\0') {
			w += 2;                 /* "-Sprogram args": its program */
		} else if (strcmp(w, "-u") == 0 || strcmp(w, "-C") == 0 ||
			   strcmp(w, "-P") == 0) {
			p += strspn(p, " \t"); /* an option and its value */
			p += strcspn(p, " \t");
			continue;
		} else if (w[0] == '-' || strchr(w, '=') != NULL) {
			continue;               /* env's options and NAME=VALUE */
		}
		/* the program: this one, or a name looked up in PATH */
		return is_self(w, &self) ||
		       (strchr(w, '/') == NULL && strcmp(w, "rategate") == 0);
	}
}

/* Make *path absolute (against the working directory), set
 * SCRIPT_FILENAME to it and change into its directory.  Returns 0 or an
 * errno. */
static int
wrapper_script_env(char **path)
{
	if ((*path)[0] != '/') {
		char *cwd = getcwd(NULL, 0);
		if (cwd == NULL)
			return errno;
		size_t cl = strlen(cwd), pl = strlen(*path);
		char *abs = log_xrealloc(NULL, cl + 1 + pl + 1);
		memcpy(abs, cwd, cl);
		abs[cl] = '/';
		memcpy(abs + cl + 1, *path, pl + 1);
		free(cwd);
		free(*path);
		*path = abs;
	}
	const char *slash = strrchr(*path, '/');
	size_t dl = slash == *path ? 1 : (size_t)(slash - *path);
	char *dir = log_xrealloc(NULL, dl + 1);
	memcpy(dir, *path, dl);
	dir[dl] = '\0';
	int r = chdir(dir) == 0 ? 0 : errno;
	free(dir);
	if (r == 0 && setenv("SCRIPT_FILENAME", *path, 1) != 0)
		r = errno;
	return r;
}

int
wrapper_main(const char *rules, const char *script)
{
	struct respond_buf out;
	char err[512];
	struct log *lg = log_new(NULL, err, sizeof(err));   /* stderr: the web server's error log */
	struct rl_store st = { NULL, NULL };
	const char *accept = getenv("HTTP_ACCEPT");
	enum respond_format f = respond_negotiate(accept, accept ? strlen(accept) : 0);
	int status = 0;

	respond_buf_init(&out);
	nph_status_line();
	struct rl_ruleset *rs = fileio_load_rules(rules, 0);
	if (rs == NULL) {
		log_printf(lg, LOG_LEVEL_ERROR, "start", "%s: rules not loaded", rules);
		status = fail(&out, 500, "internal_error",
			      "Internal Server Error: the rate limiter's rules do not load", f);
		goto out;
	}
	const struct rl_settings *s = rl_ruleset_settings(rs);
	log_set_json(lg, s->log_format == RL_LOG_JSON);
	if (s->storage.kind == RL_STORAGE_MEMORY) {
		log_printf(lg, LOG_LEVEL_ERROR, "start",
			   "%s: storage memory in CGI wrapper mode would give every request a fresh, private budget: use storage shm: (the default)",
			   rules);
		status = fail(&out, 500, "internal_error",
			      "Internal Server Error: the rate limiter is misconfigured", f);
		goto out;
	}

	/* The CGI environment as params. */
	size_t n = 0, k = 0;
	for (char **e = environ; *e != NULL; e++)
		n++;
	struct rl_param *params = log_xrealloc(NULL, (n ? n : 1) * sizeof(*params));
	for (char **e = environ; *e != NULL; e++) {
		const char *eq = strchr(*e, '=');
		if (eq == NULL)
			continue;
		params[k].name = *e;
		params[k].name_len = (size_t)(eq - *e);
		params[k].value = eq + 1;
		params[k].value_len = strlen(eq + 1);
		k++;
	}
	char target[RL_PATH_MAX + 2];
	struct rl_request rq;
	struct rl_decision d;
	if (fcgi_request(params, k, target, sizeof(target), &rq) != 0) {
		log_bad_content_length(lg, &rq, getenv("REMOTE_ADDR"),
				       fcgi_bad_length(params, k));
		free(params);
		status = fail(&out, 400, "bad_request",
			      "Bad Request: Content-Length is not a number", f);
		goto out;
	}
	int store_down = 0;
	if (store_open(rs, lg, &st, err, sizeof(err)) != 0) {
		int allow = s->store_failure == RL_STORE_FAIL_ALLOW;
		log_printf(lg, LOG_LEVEL_ERROR, "store-error",
			   "%s: %s (store-failure %s: request %s)", rules, err,
			   allow ? "allow" : "deny",
			   allow ? "let through" : "answered 503");
		/* Let through, the rest as usual: the rules still pick the
		 * script (a rule's upstream=), check the request (a missing
		 * key, max-body) and clean the environment; an empty private
		 * store stands in for the counters, and nothing is counted. */
		if (!allow || memstore_new(64, &st) != 0) {
			free(params);
			respond_error(&out, 503, RESPOND_STORE_RETRY_S, "unavailable",
				      "Service Unavailable: the rate limiter cannot reach its counters", f);
			put_out(&out);
			goto out;
		}
		store_down = 1;
	}
	int64_t now = clock_wall_ms();
	/* A body without a length (Apache's mod_cgi and mod_cgid pass a
	 * chunked upload so: HTTP_TRANSFER_ENCODING, no CONTENT_LENGTH) on a
	 * path that limits bodies: the wrapper is gone once the script runs
	 * and could neither stop it at max-body nor count it for bandwidth=,
	 * so it asks for a length (411) before anything is counted. */
	const char *te = getenv("HTTP_TRANSFER_ENCODING");
	const char *cl = getenv("CONTENT_LENGTH");
	if (te != NULL && te[0] != '\0' && (cl == NULL || cl[0] == '\0')) {
		rl_decide(rs, &st, &rq, now, RL_TEST, &d);
		if (d.outcome == RL_ALLOW &&
		    (d.max_body > 0 || (d.rule != NULL && d.rule->nbandwidth > 0))) {
			struct log_request lr = { rq.method, rq.path, rq.path_len, now };
			snprintf(d.error, sizeof(d.error),
				 "a body without Content-Length (Transfer-Encoding: %.40s) on a path with %s: the CGI wrapper cannot measure it",
				 te, d.max_body > 0 ? "max-body" : "bandwidth=");
			d.outcome = RL_TOO_LARGE;
			log_decision(lg, &lr, &d, 411);
			free(params);
			fail(&out, 411, "length_required",
			     "Length Required: this path limits request bodies; send the body with a Content-Length", f);
			goto out;
		}
	}
	rl_decide(rs, &st, &rq, now, store_down ? RL_TEST : RL_HIT, &d);
	if (d.outcome == RL_STORE_ERROR && s->store_failure == RL_STORE_FAIL_ALLOW) {
		log_printf(lg, LOG_LEVEL_ERROR, "store-error",
			   "%s (store-failure allow: request let through)", d.error);
		d.outcome = RL_ALLOW;
		d.limit = NULL;
	}
	if (store_down && d.outcome == RL_ALLOW)
		d.limit = NULL;         /* no count to tell the script */
	struct log_request lr = { rq.method, rq.path, rq.path_len, now };
	if (d.outcome != RL_ALLOW) {
		struct respond_opts ro;
		respond_opts_from_settings(&ro, s);
		int code = respond_authorizer(&out, &ro, &d, now, f);
		put_out(&out);
		log_decision(lg, &lr, &d, code);
		free(params);
		goto out;
	}
	log_decision(lg, &lr, &d, 200);
	if (d.rule != NULL && d.rule->deduct && !store_down) {
		/* rl_decide only checked a deduct-when= rule's request limits:
		 * they are counted after the response, which the wrapper never
		 * sees.  Count this request now, as a plain rule would be (not
		 * in the same batch as the check: CGI processes running at the
		 * same moment may each pass the last hit). */
		int code = 0;
		for (int c = 100; c <= 599 && code == 0; c++)
			if (rl_rule_deducts(d.rule, c))
				code = c;
		struct rl_diag e;
		if (code != 0 && rl_after_response(rs, &st, &rq, code, 0, now, &e) != 0)
			log_printf(lg, LOG_LEVEL_ERROR, "store-error", "counting a deduct-when= rule: %s",
				   e.msg);
		else if (d.limit != NULL && d.origin == RL_FROM_RULE && !d.bandwidth &&
			 d.remaining >= d.cost)
			d.remaining -= d.cost;
	}
	/* Each request is a new process: said on every request that uses
	 * such a rule, which is how an admin notices. */
	if (d.rule != NULL && (d.rule->deduct || d.rule->concurrency > 0))
		log_responder_only(lg, "cgi-wrapper", d.rule, "here",
				   "every request is counted",
				   "requests in flight are not limited");
	if (script == NULL) {
		const struct rl_upstream *u = d.upstream_rule != NULL
			? d.upstream_rule->upstream : s->upstream;
		if (u == NULL || u->kind != RL_UPSTREAM_CGI) {
			char pb[LOG_FIELD_MAX + 1];
			log_printf(lg, LOG_LEVEL_ERROR, "no-upstream",
				   "CGI wrapper: no script for %s: give it on the command line or set upstream cgi:/path in %s",
				   log_path(rq.path, rq.path_len, pb), rules);
			free(params);
			status = fail(&out, 502, "bad_gateway",
				      "Bad Gateway: no script is configured for this path", f);
			goto out;
		}
		script = u->path;
	}
	free(params);   /* environ itself is untouched until here */
	char num[32];
	set_env("RL_CLIENT", d.client);
	set_env("RL_KEY", d.key);
	if (d.rule != NULL)
		set_env("RL_RULE", d.rule->pattern.text);
	if (d.limit != NULL) {
		set_env("RL_LIMIT", d.limit->text);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)d.remaining);
		set_env("RL_REMAINING", num);
		snprintf(num, sizeof(num), "%lld",
			 (long long)respond_seconds_until(d.reset_ms, now));
		set_env("RL_RESET", num);
	}
	if (d.would_deny)
		set_env("RL_DRY_RUN_DENY", "1");
	if (d.exempt)
		set_env("RL_EXEMPT", "1");
	unsetenv("HTTP_PROXY");         /* httpoxy */
	{
		/* The script path outlives the rule set only as a copy. */
		char *path = strdup(script);
		if (path == NULL)
			log_xrealloc(NULL, SIZE_MAX);
		if (st.ops != NULL)
			st.ops->destroy(st.impl);
		rl_ruleset_free(rs);
		respond_buf_free(&out);
		/* As the responder's CGI back end does (cgi.c) and RFC 3875
		 * 7.2 suggests: the script runs in its own directory and
		 * SCRIPT_FILENAME names it, not the program the web server
		 * started (rategate itself, with cgi.assign or alias.url). */
		int e = wrapper_script_env(&path);
		/* a script that would start rategate again is refused (500:
		 * the wrapper is misconfigured); one that cannot run is a 502 */
		int again = e == 0 && runs_rategate_again(path);
		if (again) {
			log_printf(lg, LOG_LEVEL_ERROR, "exec",
				   "CGI wrapper: %s is rategate itself or names it on its #! line: running it would start rategate again (refused; name the real script with upstream cgi: or the command line)",
				   path);
		} else {
			if (e == 0) {
				char *argv[2] = { path, NULL };
				execve(path, argv, environ);
				e = errno;
			}
			log_printf(lg, LOG_LEVEL_ERROR, "exec", "CGI wrapper: cannot run %s: %s",
				   path, strerror(e));
		}
		free(path);
		respond_buf_init(&out);
		if (again)
			fail(&out, 500, "internal_error", "Internal Server Error: the wrapper is misconfigured", f);
		else
			fail(&out, 502, "bad_gateway", "Bad Gateway: the script cannot be run", f);
		respond_buf_free(&out);
		drain_stdin();
		log_free(lg);
		return 0;
	}
out:
	drain_stdin();
	if (st.ops != NULL)
		st.ops->destroy(st.impl);
	rl_ruleset_free(rs);
	respond_buf_free(&out);
	log_free(lg);
	return status;
}
