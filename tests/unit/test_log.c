/*
 * test_log.c - gateway/log.c: the exact logfmt lines of denials and errors
 * (quoting, escaping, cutting), and keys whose client-supplied values are
 * hashed so secrets never reach the log.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

#define NOW 1795424400123LL     /* 2026-11-23 09:00:00.123 UTC */

static char path[] = "/tmp/test_log.XXXXXX";
static struct log *lg;

static void
setup(void)
{
	char err[200];
	int fd = mkstemp(path);

	cr_assert(fd >= 0);
	close(fd);
	lg = log_new(path, err, sizeof(err));
	cr_assert_not_null(lg, "%s", err);
}

static void
teardown(void)
{
	log_free(lg);
	unlink(path);
}

/* The log file's text, each line's pid field checked (this process's,
 * right after the time) and taken out, so the lines below read as they
 * would with any pid. */
static char *
contents(void)
{
	FILE *f = fopen(path, "r");
	static char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	char plain[40], json[40];

	fclose(f);
	buf[n] = '\0';
	snprintf(plain, sizeof(plain), "Z pid=%ld ", (long)getpid());
	snprintf(json, sizeof(json), "Z\",\"pid\":%ld,", (long)getpid());
	for (char *line = buf; *line; ) {
		char *end = strchr(line, '\n');
		const char *want = line[0] == '{' ? json : plain;
		char *at = strstr(line, want);
		cr_assert(at != NULL && (end == NULL || at < end),
			  "no \"%s\" after the time: %s", want, line);
		/* keep "Z " or "Z\"," and drop the field */
		size_t keep = line[0] == '{' ? 3 : 2, cut = strlen(want) - keep;
		memmove(at + keep, at + keep + cut, strlen(at + keep + cut) + 1);
		end = strchr(line, '\n');
		line = end ? end + 1 : line + strlen(line);
	}
	return buf;
}

TestSuite(log, .init = setup, .fini = teardown);

Test(log, deny_line)
{
	static struct rl_limit lim = { .count = 5, .period_ms = 60000, .text = "5 per minute" };
	struct rl_rule rule;
	struct rl_decision d;
	struct log_request r = { "POST", "/login?secret=1", 6, NOW };

	memset(&rule, 0, sizeof(rule));
	rule.pattern.text = "/login";
	memset(&d, 0, sizeof(d));
	d.outcome = RL_DENY;
	d.rule = &rule;
	d.limit = &lim;
	d.retry_ms = 41001;
	strcpy(d.client, "192.0.2.7");
	strcpy(d.key, "addr=192.0.2.7");
	log_decision(lg, &r, &d, 429);
	cr_assert_str_eq(contents(),
		"time=2026-11-23T09:00:00.123Z level=info event=deny status=429 client=192.0.2.7 "
		"key=\"addr=192.0.2.7\" rule=/login origin=rule limit=\"5 per minute\" remaining=0 "
		"path=/login method=POST retry_after=42\n");
}

Test(log, allow_is_silent_dry_run_is_not)
{
	struct rl_decision d;
	struct log_request r = { "GET", "/a", 2, NOW };

	memset(&d, 0, sizeof(d));
	d.outcome = RL_ALLOW;
	strcpy(d.client, "-");
	log_decision(lg, &r, &d, 200);
	cr_assert_str_eq(contents(), "");
	d.would_deny = 1;
	d.retry_ms = 1;
	log_decision(lg, &r, &d, 200);
	cr_assert_str_eq(contents(),
		"time=2026-11-23T09:00:00.123Z level=info event=dry-run-deny status=200 client=- "
		"key=- rule=- path=/a method=GET retry_after=1\n");
	/* a dry-run max-body: a body too large, no wait to tell */
	d.retry_ms = 0;
	snprintf(d.error, sizeof(d.error), "request body of 20 bytes is above max-body 10");
	log_decision(lg, &r, &d, 200);
	cr_assert_str_eq(contents(),
		"time=2026-11-23T09:00:00.123Z level=info event=dry-run-deny status=200 client=- "
		"key=- rule=- path=/a method=GET retry_after=1\n"
		"time=2026-11-23T09:00:00.123Z level=info event=dry-run-deny status=200 client=- "
		"key=- rule=- path=/a method=GET error=\"request body of 20 bytes is above max-body 10\"\n");
}

Test(log, hostile_request_text_is_escaped_and_cut)
{
	struct rl_decision d;
	char longpath[600];
	struct log_request r = { "G\"E T\n", "/a b\"c\\\x01\xc3\xa9", 10, NOW };

	memset(&d, 0, sizeof(d));
	d.outcome = RL_BAD_REQUEST;
	strcpy(d.client, "-");
	strcpy(d.error, "bad request path: bad %-escape");
	log_decision(lg, &r, &d, 400);
	cr_assert_str_eq(contents(),
		"time=2026-11-23T09:00:00.123Z level=warn event=bad-request status=400 client=- "
		"key=- rule=- path=\"/a b\\\"c\\\\\\x01\xc3\xa9\" method=\"G\\\"E T\\n\" "
		"error=\"bad request path: bad %-escape\"\n");

	memset(longpath, 'a', sizeof(longpath));
	longpath[0] = '/';
	r.path = longpath;
	r.path_len = sizeof(longpath);
	r.method = "GET";
	truncate(path, 0);
	log_decision(lg, &r, &d, 400);
	char want[400];
	snprintf(want, sizeof(want), " path=\"/%.*s...\" method=GET ", LOG_FIELD_MAX - 1,
		 longpath + 1);
	cr_assert_not_null(strstr(contents(), want), "%s", contents());
}

Test(log, printf_lines)
{
	log_printf(lg, LOG_LEVEL_ERROR, "unsupported-role", "FastCGI role %s: %d", "RESPONDER", 7);
	char *s = contents();
	cr_assert_eq(strncmp(s, "time=", 5), 0);
	cr_assert_not_null(strstr(s, "Z level=error event=unsupported-role msg=\"FastCGI role RESPONDER: 7\"\n"), "%s", s);
}

Test(log, keys_hash_client_supplied_values)
{
	char out[LOG_KEY_MAX + 4];

	log_key("addr=192.0.2.7", out, sizeof(out));
	cr_assert_str_eq(out, "addr=192.0.2.7");
	log_key("v.REMOTE_USER=alice+addr=2001:db8::/64", out, sizeof(out));
	cr_assert_str_eq(out, "v.REMOTE_USER=alice+addr=2001:db8::/64");
	log_key("h.x-api-key=s3cr3t", out, sizeof(out));
	cr_assert_eq(strncmp(out, "h.x-api-key=#", 13), 0, "%s", out);
	cr_assert_eq(strlen(out), 13 + 16);
	cr_assert_null(strstr(out, "s3cr3t"));
	char again[LOG_KEY_MAX + 4];
	log_key("h.x-api-key=s3cr3t", again, sizeof(again));
	cr_assert_str_eq(out, again, "the hash is stable");
	log_key("h.x-api-key=s3cr3u", again, sizeof(again));
	cr_assert_str_neq(out, again);
	log_key("c.session=abc+q.token=xyz+addr=10.0.0.1", out, sizeof(out));
	cr_assert_null(strstr(out, "abc"));
	cr_assert_null(strstr(out, "xyz"));
	cr_assert_eq(strncmp(out, "c.session=#", 11), 0, "%s", out);
	cr_assert_not_null(strstr(out, "+q.token=#"), "%s", out);
	cr_assert_not_null(strstr(out, "+addr=10.0.0.1"), "%s", out);
	/* a CGI variable carrying a header is a header (found by a review:
	 * key=var:HTTP_X_TOKEN logged the token) */
	log_key("v.HTTP_X_TOKEN=supersecret+v.http_cookie=sid%3Dq1", out, sizeof(out));
	cr_assert_null(strstr(out, "supersecret"), "%s", out);
	cr_assert_null(strstr(out, "q1"), "%s", out);
	cr_assert_eq(strncmp(out, "v.HTTP_X_TOKEN=#", 16), 0, "%s", out);

	char longkey[400];
	memset(longkey, 'x', sizeof(longkey));
	memcpy(longkey, "v.X=", 4);
	longkey[sizeof(longkey) - 1] = '\0';
	log_key(longkey, out, sizeof(out));
	cr_assert_eq(strlen(out), LOG_KEY_MAX + 3);
	cr_assert_str_eq(out + LOG_KEY_MAX, "...");
}

Test(log, cannot_open)
{
	char err[200];

	cr_assert_null(log_new("/nonexistent-dir/x.log", err, sizeof(err)));
	cr_assert_str_eq(err, "log file /nonexistent-dir/x.log: No such file or directory");
}

Test(log, json_lines_are_json)
{
	static struct rl_limit lim = { .count = 5, .period_ms = 60000, .text = "5 per minute" };
	struct rl_rule rule;
	struct rl_decision d;
	/* a quote, a backslash, a control byte, valid UTF-8 (é) and an
	 * invalid byte (0xff) in the path */
	struct log_request r = { "POST", "/a\"\\\x01\xc3\xa9\xff", 8, NOW };

	log_set_json(lg, 1);
	memset(&rule, 0, sizeof(rule));
	rule.pattern.text = "/login";
	memset(&d, 0, sizeof(d));
	d.outcome = RL_DENY;
	d.rule = &rule;
	d.limit = &lim;
	d.retry_ms = 41001;
	strcpy(d.client, "192.0.2.7");
	strcpy(d.key, "h.x-api-key=s3cret");
	log_decision(lg, &r, &d, 429);
	char *s = contents();
	cr_assert_str_eq(s,
		"{\"time\":\"2026-11-23T09:00:00.123Z\",\"level\":\"info\",\"event\":\"deny\",\"status\":429,"
		"\"client\":\"192.0.2.7\",\"key\":\"h.x-api-key=#36fc55b03b7a4e67\",\"rule\":\"/login\","
		"\"origin\":\"rule\",\"limit\":\"5 per minute\",\"remaining\":0,"
		"\"path\":\"/a\\\"\\\\\\u0001\xc3\xa9\\ufffd\",\"method\":\"POST\",\"retry_after\":42}\n");
	truncate(path, 0);
	log_printf(lg, LOG_LEVEL_WARN, "reload", "line \"%d\"", 3);
	s = contents();
	cr_assert_eq(strncmp(s, "{\"time\":\"", 9), 0, "%s", s);
	cr_assert_not_null(strstr(s, "Z\",\"level\":\"warn\",\"event\":\"reload\",\"msg\":\"line \\\"3\\\"\"}\n"), "%s", s);
}

Test(log, too_large_line)
{
	struct rl_decision d;
	struct log_request r = { "PUT", "/upload", 7, NOW };

	memset(&d, 0, sizeof(d));
	d.outcome = RL_TOO_LARGE;
	strcpy(d.client, "192.0.2.7");
	strcpy(d.key, "addr=192.0.2.7");
	strcpy(d.error, "body of 2048 bytes over max-body 1024");
	log_decision(lg, &r, &d, 413);
	cr_assert_str_eq(contents(),
		"time=2026-11-23T09:00:00.123Z level=info event=too-large status=413 client=192.0.2.7 "
		"key=\"addr=192.0.2.7\" rule=- path=/upload method=PUT "
		"error=\"body of 2048 bytes over max-body 1024\"\n");
}

Test(log, request_event_line)
{
	struct rl_rule rule;
	struct rl_decision d;
	struct log_request r = { "POST", "/upload", 7, NOW };

	memset(&rule, 0, sizeof(rule));
	rule.pattern.text = "/upload";
	memset(&d, 0, sizeof(d));
	d.rule = &rule;
	strcpy(d.client, "192.0.2.7");
	strcpy(d.key, "h.x-api-key=secret");
	log_request_event(lg, LOG_LEVEL_INFO, "client-timeout", &r, &d, 408,
			  "the web server sent 3 of 10 bytes of the request body and then nothing for 1 s");
	char *s = contents();
	cr_assert_eq(strncmp(s, "time=", 5), 0, "%s", s);
	cr_assert_not_null(strstr(s, "Z level=info event=client-timeout status=408 client=192.0.2.7 "
				  "key=\"h.x-api-key=#"), "%s", s);
	cr_assert_null(strstr(s, "secret"), "%s", s);
	cr_assert_not_null(strstr(s, "\" rule=/upload path=/upload method=POST "
				  "msg=\"the web server sent 3 of 10 bytes of the request body and then nothing for 1 s\"\n"),
			   "%s", s);
	/* no decision: dashes */
	truncate(path, 0);
	struct log_request none = { NULL, NULL, 0, NOW };
	log_request_event(lg, LOG_LEVEL_WARN, "client-timeout", &none, NULL, 0, "x");
	s = contents();
	cr_assert_not_null(strstr(s, "Z level=warn event=client-timeout status=0 client=- key=- rule=- "
				  "path=- method=- msg=x\n"), "%s", s);
}

/* A rule with options only the responder mode honours: each option named
 * once, the verb agreeing, each effect said. */
Test(log, responder_only_options)
{
	struct rl_rule rule;

	memset(&rule, 0, sizeof(rule));
	rule.pattern.text = "/chat";
	rule.file = "site.rules";
	rule.line = 7;
	rule.deduct = 1;
	rule.concurrency = 2;
	log_responder_only(lg, "cgi-wrapper", &rule, "here", "every request is counted",
			   "requests in flight are not limited");
	rule.deduct = 0;
	log_responder_only(lg, "authorizer-limits", &rule, "as an authorizer rategate",
			   "checks the rule's limits but never counts them",
			   "does not limit requests in flight");
	const char *t = contents();
	cr_expect_not_null(strstr(t, "level=warn event=cgi-wrapper msg=\"rule /chat (site.rules:7): "
				  "deduct-when= and concurrency= need the responder mode; here every request "
				  "is counted and requests in flight are not limited\""), "%s", t);
	cr_expect_not_null(strstr(t, "event=authorizer-limits msg=\"rule /chat (site.rules:7): "
				  "concurrency= needs the responder mode; as an authorizer rategate does not "
				  "limit requests in flight\""), "%s", t);
}

/* A log whose reader stops reading (a FIFO nobody reads: a stalled logger,
 * a breakagelog pipe) never blocks the caller: lines that do not fit are
 * dropped and counted, and once the reader catches up the next line is
 * followed by one that says how many were lost.  (Blocking here would
 * hang every worker and the stop: the test's timeout catches that.) */
Test(log, stalled_pipe_drops_lines_and_says_so, .timeout = 20)
{
	char fifo[] = "/tmp/test_log_fifo.XXXXXX", err[200];
	cr_assert_not_null(mkdtemp(fifo));
	char fpath[64];
	snprintf(fpath, sizeof(fpath), "%s/f", fifo);
	cr_assert_eq(mkfifo(fpath, 0600), 0);
	int rd = open(fpath, O_RDONLY | O_NONBLOCK);
	cr_assert_geq(rd, 0);
	struct log *pl = log_new(fpath, err, sizeof(err));
	cr_assert_not_null(pl, "%s", err);

	/* 64 KiB of pipe takes some 500 of these; 2000 must not block */
	for (int i = 0; i < 2000; i++)
		log_printf(pl, LOG_LEVEL_INFO, "flood", "line %d of a flood the reader does not read", i);
	static char buf[1 << 17];
	size_t got = 0;
	ssize_t n;
	while ((n = read(rd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	size_t lines = 0;
	for (size_t i = 0; i < got; i++)
		lines += buf[i] == '\n';
	cr_assert(lines > 100 && lines < 2000, "%zu lines got through", lines);
	cr_assert_eq(buf[got - 1], '\n', "the last line written is whole");
	cr_assert_null(strstr(buf, "event=log-dropped"));

	/* the reader caught up: the next line, then the count of the lost */
	log_printf(pl, LOG_LEVEL_INFO, "after", "back");
	got = 0;
	while ((n = read(rd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	char want[200];
	snprintf(want, sizeof(want),
		 "level=warn event=log-dropped msg=\"%zu log lines dropped: the log's reader did not take them (a stalled pipe or a full disk)\"\n",
		 2000 - lines);
	cr_expect_not_null(strstr(buf, "level=info event=after msg=back\n"), "%s", buf);
	cr_expect_not_null(strstr(buf, want), "%s\nwanted %s", buf, want);
	log_free(pl);
	close(rd);
	unlink(fpath);
	rmdir(fifo);
}

/* Standard error a terminal nobody reads (a pty whose master is never
 * read): lines never block, through a descriptor of the log's own; the
 * shared one (which CGI scripts inherit) keeps its blocking mode. */
Test(log, unread_terminal_never_blocks, .timeout = 20)
{
	char err[200];
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	cr_assert_geq(master, 0);
	cr_assert_eq(grantpt(master), 0);
	cr_assert_eq(unlockpt(master), 0);
	int slave = open(ptsname(master), O_WRONLY | O_NOCTTY);
	cr_assert_geq(slave, 0);
	int saved = dup(2);
	cr_assert_eq(dup2(slave, 2), 2);
	struct log *tl = log_new(NULL, err, sizeof(err));
	cr_assert_not_null(tl, "%s", err);
	char msg[1001];
	memset(msg, 'x', 1000);
	msg[1000] = '\0';
	for (int i = 0; i < 2000; i++)
		log_printf(tl, LOG_LEVEL_INFO, "flood", "%s", msg);
	int fl = fcntl(2, F_GETFL);
	log_free(tl);
	dup2(saved, 2);
	close(saved);
	close(slave);
	close(master);
	cr_expect(fl >= 0 && !(fl & O_NONBLOCK), "fd 2 was made non-blocking");
}

/* The last line of a dying process (async-signal-safe, its own code):
 * the same time, pid, level and event fields as every other line. */
Test(log, fatal_line)
{
	log_fatal(lg, "crash", "SIGBUS: the store file was truncated");
	char *s = contents();
	cr_assert_eq(strncmp(s, "time=", 5), 0, "%s", s);
	cr_assert_not_null(strstr(s, "Z level=error event=crash msg=\"SIGBUS: the store file was truncated\"\n"),
			   "%s", s);
	truncate(path, 0);
	log_set_json(lg, 1);
	log_fatal(lg, "crash", "SIGBUS");
	s = contents();
	cr_assert_eq(strncmp(s, "{\"time\":\"", 9), 0, "%s", s);
	cr_assert_not_null(strstr(s, "Z\",\"level\":\"error\",\"event\":\"crash\",\"msg\":\"SIGBUS\"}\n"), "%s", s);
}

/* A line longer than LOG_LINE_MAX once escaped (a msg naming a request
 * whose method and path are control bytes or invalid UTF-8, an
 * application's stderr line) is cut between two escapes, its value
 * closed: a JSON line stays one valid object, a logfmt value keeps its
 * closing quote (found by a review: the line was cut inside an escape,
 * "\u000}", with no closing quote). */
Test(log, a_line_cut_at_its_limit_stays_well_formed)
{
	char msg[1600];

	memset(msg, '\x01', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	log_printf(lg, LOG_LEVEL_ERROR, "upstream-error", "%s", msg);
	log_set_json(lg, 1);
	log_printf(lg, LOG_LEVEL_ERROR, "upstream-error", "%s", msg);
	char *c = contents();
	char *second = strchr(c, '\n');
	cr_assert_not_null(second);
	*second++ = '\0';
	size_t l1 = strlen(c), l2 = strlen(second);
	cr_assert(l1 <= LOG_LINE_MAX && l2 <= LOG_LINE_MAX + 1, "%zu %zu", l1, l2);
	cr_assert(l1 > 16 && strcmp(c + l1 - 8, "\\x01...\"") == 0, "%s", c + l1 - 16);
	cr_assert(l2 > 16 && strcmp(second + l2 - 12, "\\u0001...\"}\n") == 0, "%s", second + l2 - 16);
}

/* A line cut short by a full disk whose newline could not be written
 * either: the next line still starts on a line of its own (it was glued
 * onto the torn one; found by a review).  The disk fills by RLIMIT_FSIZE,
 * in a child. */
Test(log, a_torn_line_is_ended_before_the_next)
{
	pid_t pid = fork();

	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct stat sb;
		signal(SIGXFSZ, SIG_IGN);
		log_printf(lg, LOG_LEVEL_INFO, "first", "a whole line");
		if (stat(path, &sb) != 0)
			_exit(2);
		struct rlimit rl = { (rlim_t)sb.st_size + 20, RLIM_INFINITY };
		if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
			_exit(3);
		log_printf(lg, LOG_LEVEL_INFO, "torn", "cut short by the full disk");
		rl.rlim_cur = RLIM_INFINITY;
		if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
			_exit(4);
		log_printf(lg, LOG_LEVEL_INFO, "after", "the disk has room again");
		_exit(0);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
	/* the child's lines: read as they are (contents() wants our pid) */
	static char c[8192];
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	c[fread(c, 1, sizeof(c) - 1, f)] = '\0';
	fclose(f);
	/* the first line, 20 bytes of the torn one, and then every line
	 * whole from its start */
	char *after = strstr(c, "event=after");
	cr_assert_not_null(after, "%s", c);
	char *bol = after;
	while (bol > c && bol[-1] != '\n')
		bol--;
	char *second = strstr(bol + 5, "time=");
	cr_expect(strncmp(bol, "time=", 5) == 0 && (second == NULL || second > after),
		  "glued:\n%s", c);
	cr_expect_not_null(strstr(c, "event=log-dropped"), "%s", c);
}

/* Each string of a JSON line closed, the line ending "}\n". */
static int
json_closed(const char *s, size_t n)
{
	int in = 0;

	for (size_t i = 0; i < n; i++) {
		if (in && s[i] == '\\')
			i++;
		else if (s[i] == '"')
			in = !in;
	}
	return !in && n >= 2 && s[n - 2] == '}' && s[n - 1] == '\n';
}

/* Near-full JSON lines: a rule pattern of 120 bytes each written
 * \ufffd, paths of control bytes (\u0001) and letters, so that the line
 * fills to every length near its limit.  No field head may be written
 * without room for its value's closing '..."' (found by a review: one
 * length left a string unclosed). */
Test(log, near_full_json_lines_close_every_string)
{
	static struct rl_rule rr;
	static char pat[121];
	char p[256];

	memset(pat, 0xe9, 120);
	pat[0] = '/';
	rr.pattern.text = pat;
	rr.pattern.len = 120;
	log_set_json(lg, 1);
	for (int ctl = 180; ctl <= 200; ctl++)
		for (int asc = 0; asc <= 12; asc++) {
			struct rl_decision d;
			int k = 0;
			for (int i = 0; i < ctl; i++)
				p[k++] = 1;
			for (int i = 0; i < asc; i++)
				p[k++] = 'a';
			memset(&d, 0, sizeof(d));
			d.outcome = RL_BAD_REQUEST;
			d.rule = &rr;
			strcpy(d.client, "192.0.2.1");
			struct log_request r = { "GET", p, (size_t)k, NOW };
			log_decision(lg, &r, &d, 400);
		}
	FILE *f = fopen(path, "r");
	char line[LOG_LINE_MAX + 2];
	int n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strlen(line);
		cr_expect(json_closed(line, len), "line %d (%zu bytes) ends %s", n,
			  len, line + (len > 40 ? len - 40 : 0));
		n++;
	}
	fclose(f);
	cr_expect_eq(n, 21 * 13);
}
