/*
 * test_replay.c - `rategate replay`: trace and access-log lines, and the
 * printed decisions on a virtual clock.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

static struct replay_line L;
static char err[300];

static int
parse(const char *s)
{
	err[0] = '\0';
	return replay_parse_line(s, strlen(s), &L, err, sizeof(err));
}

Test(replay, trace_lines)
{
	cr_assert_eq(parse("1700000000.250 192.0.2.7 POST /login"), 1);
	cr_assert_eq(L.t_ms, 1700000000250LL);
	cr_assert_str_eq(L.addr, "192.0.2.7");
	cr_assert_str_eq(L.method, "POST");
	cr_assert_str_eq(L.path, "/login");
	cr_assert_eq(L.has_query, 0);
	cr_assert_eq(L.cost, 0);

	cr_assert_eq(parse("  1700000001 2001:db8::1 GET /a?b=c 5"), 1);
	cr_assert_eq(L.t_ms, 1700000001000LL);
	cr_assert_str_eq(L.addr, "2001:db8::1");
	cr_assert_str_eq(L.path, "/a");
	cr_assert_str_eq(L.query, "b=c");
	cr_assert_eq(L.cost, 5);

	cr_assert_eq(parse(""), 0);
	cr_assert_eq(parse("# a comment"), 0);
}

Test(replay, combined_log_lines)
{
	cr_assert_eq(parse("192.0.2.7 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif?x=1 HTTP/1.0\" 200 2326 \"http://www.example.com/start.html\" \"Mozilla/4.08\""), 1);
	/* 2000-10-10 20:55:36 UTC */
	cr_assert_eq(L.t_ms, 971211336000LL);
	cr_assert_str_eq(L.addr, "192.0.2.7");
	cr_assert_str_eq(L.method, "GET");
	cr_assert_str_eq(L.path, "/apache_pb.gif");
	cr_assert_str_eq(L.query, "x=1");

	cr_assert_eq(parse("::1 - - [23/Nov/2026:09:00:00 +0000] \"POST http://example.com/login HTTP/1.1\" 401 5"), 1);
	cr_assert_eq(L.t_ms, 1795424400000LL);
	cr_assert_str_eq(L.path, "/login");

	/* absolute-form without a path: "/" and the query, as in the gateway */
	cr_assert_eq(parse("1700000000 192.0.2.7 GET http://h?q=1/x"), 1);
	cr_assert_str_eq(L.path, "/");
	cr_assert_eq(L.has_query, 1);
	cr_assert_str_eq(L.query, "q=1/x");
	cr_assert_eq(parse("1700000000 192.0.2.7 GET https://h"), 1);
	cr_assert_str_eq(L.path, "/");
	cr_assert_eq(L.has_query, 0);
	cr_assert_eq(parse("1700000000 192.0.2.7 GET http://h/a?b"), 1);
	cr_assert_str_eq(L.path, "/a");
	cr_assert_str_eq(L.query, "b");
	/* a raw '#' ends the target, as in the gateway */
	cr_assert_eq(parse("1700000000 192.0.2.7 GET /login#x?y"), 1);
	cr_assert_str_eq(L.path, "/login");
	cr_assert_eq(L.has_query, 0);
	cr_assert_eq(parse("1700000000 192.0.2.7 GET /q?user=a#7"), 1);
	cr_assert_str_eq(L.path, "/q");
	cr_assert_str_eq(L.query, "user=a");

	/* Apache's vhost_combined: "vhost:port" first */
	cr_assert_eq(parse("www.example.com:443 192.0.2.8 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612 \"-\" \"curl\""), 1);
	cr_assert_str_eq(L.addr, "192.0.2.8");
	cr_assert_str_eq(L.path, "/login");
	/* a vhost that reads as an address (Apache without a ServerName logs
	 * its own address there): the client is still the second field */
	cr_assert_eq(parse("127.0.1.1:80 192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612 \"-\" \"curl\""), 1);
	cr_assert_str_eq(L.addr, "192.0.2.9");
	cr_assert_eq(parse("2001:db8::1:80 2001:db8::7 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612 \"-\" \"curl\""), 1);
	cr_assert_str_eq(L.addr, "2001:db8::7");
	cr_assert_eq(parse("[2001:db8::1]:443 192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612 \"-\" \"curl\""), 1);
	cr_assert_str_eq(L.addr, "192.0.2.9");
	/* lighttpd's default format logs the Host before the time: an IPv6
	 * literal's brackets are not the time's */
	cr_assert_eq(parse("::1 [::1]:8080 - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612 \"-\" \"curl\""), 1);
	cr_assert_str_eq(L.addr, "::1");
	cr_assert_eq(L.t_ms, 1700000006000LL);
	/* no such day */
	cr_assert_eq(parse("192.0.2.9 - - [31/Feb/2023:22:13:26 +0000] \"GET / HTTP/1.1\" 200 1"), -1);
	cr_assert_eq(parse("192.0.2.9 - - [29/Feb/2023:22:13:26 +0000] \"GET / HTTP/1.1\" 200 1"), -1);
	cr_assert_eq(parse("192.0.2.9 - - [29/Feb/2024:22:13:26 +0000] \"GET / HTTP/1.1\" 200 1"), 1);
	/* two lines run together (a rotated file without its last newline) */
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"curl\"192.0.2.9 - - [14/Nov/2023:22:13:27 +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"curl\""), -1);
	cr_assert_str_eq(err, "a second [time] after the request: two log lines run together (a file without its final newline?)");
	/* brackets in a user agent are no time */
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"Mozilla [FBAN/FBIOS;FBAV/1]\""), 1);
	/* nor is a time the client wrote in its Referer or User-Agent (it
	 * got the request refused, so a client could keep its requests
	 * out of a replay) */
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"POST /login HTTP/1.1\" 401 1 \"https://x/?t=[14/Nov/2023:22:13:26 +0000]\" \"curl\""), 1, "%s", err);
	cr_assert_str_eq(L.path, "/login");
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"Mozilla \\\" [14/Nov/2023:22:13:26 +0000]\""), 1, "%s", err);
	/* but a line cut short inside a quoted field, the next one run into
	 * it, is still two lines */
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"cu192.0.2.9 - - [14/Nov/2023:22:13:27 +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"curl\""), -1);
	cr_assert_str_eq(err, "a second [time] after the request: two log lines run together (a file without its final newline?)");
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 1192.0.2.9 - - [14/Nov/2023:22:13:27 +0000] \"GET /login HTTP/1.1\" 200 1"), -1);
	/* a WebDAV method of 16 letters (the gateway counts it as OTHER) */
	cr_assert_eq(parse("192.0.2.9 - - [14/Nov/2023:22:13:26 +0000] \"BASELINE-CONTROL /login HTTP/1.1\" 301 1 \"-\" \"-\""), 1);
	cr_assert_str_eq(L.method, "BASELINE-CONTROL");
	/* the user field is the client's on a 401 (its Basic user name):
	 * a time written there is not the request's */
	cr_assert_eq(parse("192.0.2.9 - [01/Jan/2100:00:00:00 +0000] [14/Nov/2023:22:13:26 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"-\""), 1, "%s", err);
	cr_assert_eq(L.t_ms, 1700000006000LL);
	cr_assert_eq(parse("192.0.2.9 - [01/Jan/1960:00:00:00 +0000] [14/Nov/2023:22:13:26 +0000] \"POST /login HTTP/1.1\" 401 1 \"-\" \"-\""), 1, "%s", err);
	cr_assert_eq(L.t_ms, 1700000006000LL);
	/* common log with a user: still the first field */
	cr_assert_eq(parse("192.0.2.9 - frank [14/Nov/2023:22:13:26 +0000] \"GET /login HTTP/1.1\" 200 612"), 1);
	cr_assert_str_eq(L.addr, "192.0.2.9");
	/* no request line (a 408 or 400): skipped, not an error */
	cr_assert_eq(parse("192.0.2.8 - - [14/Nov/2023:22:13:26 +0000] \"-\" 408 0 \"-\" \"-\""), 2);
}

Test(replay, bad_lines)
{
	cr_assert_eq(parse("1700000000 192.0.2.7"), -1);
	cr_assert_str_eq(err, "expected a method after the address");
	cr_assert_eq(parse("1700000000 192.0.2.7 GET"), -1);
	cr_assert_str_eq(err, "expected a path after the method");
	cr_assert_eq(parse("1700000000 192.0.2.7 GET /a 0"), -1);
	cr_assert_str_eq(err, "bad cost \"0\": expected a number from 1 to 1000000000");
	cr_assert_eq(parse("1700000000 192.0.2.7 GET /a 1 extra"), -1);
	cr_assert_str_eq(err, "unexpected text after the cost");
	cr_assert_eq(parse("hello world"), -1);
	cr_assert_str_eq(err, "expected a trace line (<time> <addr> <method> <path> [cost]) or a combined log line with [dd/Mon/yyyy:HH:MM:SS +zzzz]");
	cr_assert_eq(parse("1.2.3.4 - - [10/Foo/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1"), -1);
	/* found by fuzz_replay: a date before 1970 was a negative time */
	cr_assert_eq(parse("1.2.3.4 - - [10/Oct/1011:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1"), -1);
	cr_assert_str_eq(err, "bad time [10/Oct/1011:13:55:36 -0700]: before 1970");
	cr_assert_eq(parse("1.2.3.4 - - [01/Jan/1970:00:30:00 +0100] \"GET / HTTP/1.0\" 200 1"), -1);
	cr_assert_eq(parse("1.2.3.4 - - [01/Jan/1970:01:00:00 +0100] \"GET / HTTP/1.0\" 200 1"), 1);
	cr_assert_eq(parse("1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] \"GET\" 200 1"), -1);
	cr_assert_str_eq(err, "bad request line \"GET\": expected METHOD /path HTTP/x");
	/* a client that is not an address is an error, not a denial for a
	 * missing key */
	cr_assert_eq(parse("1700000000 foo GET /login"), -1);
	cr_assert_str_eq(err, "bad client address \"foo\": expected an IPv4 or IPv6 address (a log written with host names, HostnameLookups, cannot be replayed)");
	cr_assert_eq(parse("1700000000 999.1.1.1 GET /login"), -1);
	cr_assert_eq(parse("host.example.com - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1"), -1);
	cr_assert_str_eq(err, "bad client address \"host.example.com\": expected an IPv4 or IPv6 address (a log written with host names, HostnameLookups, cannot be replayed)");
	cr_assert_eq(parse("unix: - - [10/Oct/2000:13:55:36 -0700] \"GET / HTTP/1.0\" 200 1"), -1);
}

static char *
run(const char *rules, const char *log, int summary, int *status, char **errs)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_parse("t.rules", rules, strlen(rules),
						 NULL, &rep);
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	rl_report_free(&rep);
	FILE *in = fmemopen((void *)log, strlen(log), "r");
	char *out = NULL, *e = NULL;
	size_t outlen = 0, elen = 0;
	FILE *o = open_memstream(&out, &outlen);
	FILE *ef = open_memstream(&e, &elen);
	*status = replay_run(rs, in, "log", summary, o, ef);
	fclose(in);
	fclose(o);
	fclose(ef);
	rl_ruleset_free(rs);
	*errs = e;
	return out;
}

Test(replay, decisions_printed)
{
	int status;
	char *errs;
	char *out = run("default 2/minute\n/pay 1 per 10 seconds\n/ping exempt\n",
			"1700000000.000 192.0.2.7 GET /pay\n"
			"1700000003.500 192.0.2.7 GET /pay\n"
			"1700000010.000 192.0.2.7 GET /pay\n"
			"1700000011.000 192.0.2.7 GET /ping\n"
			"garbage line here\n"
			"1700000012.000 192.0.2.7 GET /a\n"
			"1700000012.000 192.0.2.7 GET /a\n"
			"1700000012.000 192.0.2.7 GET /a\n"
			"1700000012.000 192.0.2.7 GET /a%zz\n",
			0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t1 per 10 seconds\t0\t-\n"
			 "1\tdeny\t1 per 10 seconds\t0\t7\n"
			 "2\tallow\t1 per 10 seconds\t0\t-\n"
			 "3\tallow\t-\t-\t-\n"
			 "4\tallow\t2/minute\t1\t-\n"
			 "5\tallow\t2/minute\t0\t-\n"
			 "6\tdeny\t2/minute\t0\t60\n"
			 "7\terror\t-\t-\t-\n");
	cr_assert_eq(status, 1);
	cr_assert(strstr(errs, "log:5: expected a trace line") == errs, "%s", errs);
	cr_assert(strstr(errs, "log:9: bad request path: ") != NULL, "%s", errs);
	free(out);
	free(errs);
}

/* A limit written with tabs stays one field of the five. */
Test(replay, limit_with_tabs_is_one_field)
{
	int status;
	char *errs;
	char *out = run("/x \"1\tper\tminute\"\n",
			"1700000000.000 192.0.2.7 GET /x\n"
			"1700000001.000 192.0.2.7 GET /x\n",
			0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t1 per minute\t0\t-\n"
			 "1\tdeny\t1 per minute\t0\t59\n");
	cr_assert_eq(status, 0);
	free(out);
	free(errs);
}

/* A full replay store forgets as a gateway's does, instead of refusing
 * each new client as an error (found by a review: 5 million clients
 * gave 805,696 "store full" errors), and says so at the end. */
Test(replay, full_store_forgets_and_says_so)
{
	int status;
	char *errs;
	char log[1024];
	size_t o = 0;

	for (int i = 0; i < 10; i++)
		o += (size_t)snprintf(log + o, sizeof(log) - o,
				      "1700000000.%03d 192.0.2.%d GET /x\n", i, i + 1);
	/* the last client again, denied: its key, the newest, was kept */
	o += (size_t)snprintf(log + o, sizeof(log) - o,
			      "1700000001 192.0.2.10 GET /x\n");
	replay_max_keys = 4;
	char *out = run("/x 1/minute\n", log, 0, &status, &errs);
	replay_max_keys = 1u << 22;
	cr_expect_str_eq(out,
			 "0\tallow\t1/minute\t0\t-\n1\tallow\t1/minute\t0\t-\n"
			 "2\tallow\t1/minute\t0\t-\n3\tallow\t1/minute\t0\t-\n"
			 "4\tallow\t1/minute\t0\t-\n5\tallow\t1/minute\t0\t-\n"
			 "6\tallow\t1/minute\t0\t-\n7\tallow\t1/minute\t0\t-\n"
			 "8\tallow\t1/minute\t0\t-\n9\tallow\t1/minute\t0\t-\n"
			 "10\tdeny\t1/minute\t0\t60\n");
	cr_expect_str_eq(errs, "log: the replay store holds 4 keys and forgot 6 live ones to take new ones (0 of them limiting a client): later decisions are those of a store of that size\n");
	cr_expect_eq(status, 0);
	free(out);
	free(errs);
}

/* --verbose names the rule and the limits that decided. */
Test(replay, verbose_names_rule_and_origin)
{
	int status;
	char *errs;
	char *out = run("default 3/minute\napplication 100/hour\n/e/** 2/minute\n/e/* 2/minute\n/ping exempt\n",
			"1700000000 192.0.2.7 GET /e/x\n"
			"1700000000 192.0.2.7 GET /e/x/y\n"
			"1700000000 192.0.2.7 GET /other\n"
			"1700000000 192.0.2.7 GET /ping\n"
			"1700000000 192.0.2.7 GET /e/x\n"
			"1700000000 192.0.2.7 GET /e/x\n",
			REPLAY_VERBOSE, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t2/minute\t1\t-\trule=/e/*\torigin=rule\n"
			 "1\tallow\t2/minute\t1\t-\trule=/e/**\torigin=rule\n"
			 "2\tallow\t3/minute\t2\t-\trule=-\torigin=default\n"
			 "3\tallow\t-\t-\t-\trule=/ping\torigin=-\n"
			 "4\tallow\t2/minute\t0\t-\trule=/e/*\torigin=rule\n"
			 "5\tdeny\t2/minute\t0\t60\trule=/e/*\torigin=rule\n");
	cr_assert_eq(status, 0);
	free(out);
	free(errs);
}

/* The request line is read as the client sent it: Apache and lighttpd
 * escape '"' and '\\' as \" and \\, nginx as \x22 and \x5C, and all write
 * other bytes as \xHH.  An escaped quote does not end the request. */
Test(replay, escaped_request_lines)
{
	cr_assert_eq(parse("192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"GET /x\\\"/../login?q=\\\"a\\\\b HTTP/1.1\" 301 1 \"-\" \"ua \\\"q\\\"\""), 1);
	cr_assert_str_eq(L.path, "/x\"/../login");
	cr_assert_str_eq(L.query, "q=\"a\\b");
	cr_assert_eq(parse("192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"GET /x\\x22/../login?q=\\x22a\\x5Cb HTTP/1.1\" 301 1 \"-\" \"-\""), 1);
	cr_assert_str_eq(L.path, "/x\"/../login");
	cr_assert_str_eq(L.query, "q=\"a\\b");
	cr_assert_eq(parse("192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"GET /caf\\xC3\\xA9 HTTP/1.1\" 404 1 \"-\" \"-\""), 1);
	cr_assert_str_eq(L.path, "/caf\xc3\xa9");
	/* control bytes: refused by the servers, never passed on */
	cr_assert_eq(parse("192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"GET /a\\x09b HTTP/1.1\" 400 1 \"-\" \"-\""), -1);
	cr_assert_eq(parse("192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"\\x16\\x03\\x01\\x00\" 400 1 \"-\" \"-\""), -1);
}

/* A NUL byte does not cut a line short: the line is reported, not read as
 * its part before the NUL (or as blank, after a run of NULs such as
 * logrotate's copytruncate leaves), and the line numbers stay right. */
Test(replay, nul_bytes_are_reported_not_cut)
{
	static const char log[] =
		"1700000000 192.0.2.1 GET /login\n"
		"\0\0\0" "1700000001 192.0.2.1 GET /login\n"
		"1700000002 192.0.2.1 GET /lo\0gin\n"
		"junk\n";
	struct rl_report rep;
	const char *rules = "/login 1/minute\n";
	struct rl_ruleset *rs = rl_ruleset_parse("t.rules", rules, strlen(rules),
						 NULL, &rep);
	cr_assert_not_null(rs);
	rl_report_free(&rep);
	FILE *in = fmemopen((void *)log, sizeof(log) - 1, "r");
	char *out = NULL, *e = NULL;
	size_t outlen = 0, elen = 0;
	FILE *o = open_memstream(&out, &outlen);
	FILE *ef = open_memstream(&e, &elen);
	int status = replay_run(rs, in, "log", 0, o, ef);
	fclose(in);
	fclose(o);
	fclose(ef);
	rl_ruleset_free(rs);
	cr_assert_str_eq(out, "0\tallow\t1/minute\t0\t-\n");
	cr_assert_str_eq(e, "log:2: NUL byte in the line\n"
			    "log:3: NUL byte in the line\n"
			    "log:4: expected a trace line (<time> <addr> <method> <path> [cost]) or a combined log line with [dd/Mon/yyyy:HH:MM:SS +zzzz]\n");
	cr_assert_eq(status, 1);
	free(out);
	free(e);
}

/* A path longer than the gateway takes is decided as the gateway would
 * decide it, a bad request ("error"), in both line formats; only a query
 * too long to hold makes the line malformed. */
Test(replay, overlong_path_is_an_error_not_a_malformed_line)
{
	int status;
	char *errs;
	char in[3 * 9100], longp[9001];

	memset(longp, 'a', 9000);
	longp[9000] = '\0';
	snprintf(in, sizeof(in),
		 "1700000000 192.0.2.1 GET /%s\n"
		 "1700000000 192.0.2.1 GET /a?%s\n"
		 "192.0.2.1 - - [14/Nov/2023:22:13:20 +0000] \"GET /%s HTTP/1.1\" 200 1\n"
		 "1700000000 192.0.2.1 GET /a\n",
		 longp, longp, longp);
	char *out = run("default 1/minute\n", in, 0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\terror\t-\t-\t-\n"
			 "1\terror\t-\t-\t-\n"
			 "2\tallow\t1/minute\t0\t-\n");
	cr_assert_str_eq(errs,
			 "log:1: request path missing or longer than 8192 bytes\n"
			 "log:2: query longer than 8192 bytes\n"
			 "log:3: request path missing or longer than 8192 bytes\n");
	cr_assert_eq(status, 1);
	free(out);
	free(errs);
}

/* --summary lists denied paths as the rules read them: one row for every
 * spelling of one path. */
Test(replay, summary_paths_are_normalised)
{
	int status;
	char *errs;
	char *out = run("/login 1/minute\n",
			"1700000000 192.0.2.1 GET /login\n"
			"1700000001 192.0.2.1 GET //login\n"
			"1700000002 192.0.2.1 GET /%6cogin\n"
			"1700000003 192.0.2.1 GET /x/../login/?a=1\n"
			"1700000004 192.0.2.1 GET /login;jsessionid=1\n",
			REPLAY_SUMMARY, &status, &errs);
	cr_assert_str_eq(out,
			 "5 requests, 4 denied\n"
			 "denied requests by client:\n"
			 "         4\t192.0.2.1\n"
			 "denied requests by path:\n"
			 "         4\t/login\n");
	cr_assert_eq(status, 0);
	free(out);
	free(errs);
}

/* What replay prints of a log line goes to a terminal: a client's
 * control bytes (a path's %1B, which the summary's normalised paths
 * decode; raw bytes in a trace or in a quoted error) come out as '?',
 * never as an escape sequence the terminal would obey. */
Test(replay, control_bytes_of_a_log_never_reach_the_terminal)
{
	int status;
	char *errs;
	char *out = run("default 1/minute\n",
			"192.0.2.1 - - [14/Nov/2023:22:13:26 +0000] \"GET /a%1B[2Jb HTTP/1.1\" 200 1\n"
			"192.0.2.1 - - [14/Nov/2023:22:13:27 +0000] \"GET /a%1B[2Jb HTTP/1.1\" 200 1\n"
			"1700000000 192.0.2.2 GET /c 1\x1b[5m\n"
			"192.0.2.3 - - [14/Nov/2023:22:13:28 +0000] \"\x1b]0;x\x07 /\" 400 1\n",
			REPLAY_SUMMARY, &status, &errs);
	cr_assert_str_eq(out,
			 "2 requests, 1 denied\n"
			 "denied requests by client:\n"
			 "         1\t192.0.2.1\n"
			 "denied requests by path:\n"
			 "         1\t/a?[2Jb\n");
	cr_assert_str_eq(errs,
			 "log:3: bad cost \"1?[5m\": expected a number from 1 to 1000000000\n"
			 "log:4: bad request line \"?]0;x? /\": expected METHOD /path HTTP/x\n");
	cr_assert_eq(status, 1);
	free(out);
	free(errs);
}

/* --summary counts what the listing shows as "deny": missing-key=deny
 * denials too, and says how many requests were errors (each on stderr). */
Test(replay, summary_counts_missing_key_denials_and_errors)
{
	int status;
	char *errs;
	char *out = run("/d 5/minute key=query:user missing-key=deny\n",
			"1700000000 192.0.2.7 GET /d?user=ann\n"
			"1700000000 192.0.2.7 GET /d\n"
			"1700000001 192.0.2.9 GET /d?x=1\n"
			"1700000002 192.0.2.9 GET /d%zz\n",
			1, &status, &errs);
	cr_assert_str_eq(out,
			 "4 requests, 2 denied, 1 refused as errors (see standard error)\n"
			 "denied requests by client:\n"
			 "         1\t192.0.2.7\n"
			 "         1\t192.0.2.9\n"
			 "denied requests by path:\n"
			 "         2\t/d\n");
	cr_assert_eq(status, 0);
	cr_assert(strstr(errs, "log:4: bad request path: ") == errs, "%s", errs);
	free(out);
	free(errs);
}

Test(replay, summary_counts_dry_run_and_skipped_lines)
{
	int status;
	char *errs;
	char *out = run("/d 1/minute dry-run\n",
			"1700000000 192.0.2.7 GET /d\n"
			"1700000000 192.0.2.7 GET /d\n"
			"192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"-\" 408 0 \"-\" \"-\"\n",
			1, &status, &errs);
	cr_assert_str_eq(out,
			 "2 requests, 0 denied, 1 would be denied by dry-run limits; 1 log lines without a request (\"-\") skipped\n"
			 "denied requests by client:\n"
			 "          \t(none)\n"
			 "denied requests by path:\n"
			 "          \t(none)\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "");
	free(out);
	free(errs);
	out = run("/d 1/minute\n",
		  "192.0.2.7 - - [14/Nov/2023:22:13:26 +0000] \"-\" 400 0 \"-\" \"-\"\n"
		  "1700000000 192.0.2.7 GET /d\n",
		  0, &status, &errs);
	cr_assert_str_eq(out, "0\tallow\t1/minute\t0\t-\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "log: 1 log lines without a request (\"-\") skipped\n");
	free(out);
	free(errs);
}

Test(replay, summary)
{
	int status;
	char *errs;
	char *out = run("default 1/minute\n",
			"1700000000 192.0.2.7 GET /a\n"
			"1700000000 192.0.2.7 GET /a\n"
			"1700000000 192.0.2.7 GET /a\n"
			"1700000000 192.0.2.8 GET /b\n"
			"1700000000 192.0.2.8 GET /b\n",
			1, &status, &errs);
	cr_assert_str_eq(out,
			 "5 requests, 3 denied\n"
			 "denied requests by client:\n"
			 "         2\t192.0.2.7\n"
			 "         1\t192.0.2.8\n"
			 "denied requests by path:\n"
			 "         2\t/a\n"
			 "         1\t/b\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "");
	free(out);
	free(errs);
}

/* A deduct-when= rule counts by the response status, as the gateway does
 * after the response: a log line's status is read, so only the 401s count
 * (they were all allowed before, the rule's limits never counted); a trace
 * line records none, and is counted as the CGI wrapper counts it. */
Test(replay, deduct_when_counts_by_the_logged_status)
{
	int status;
	char *errs;
	const char *rules = "/login 2/minute methods=POST deduct-when=401\n";
	char *out = run(rules,
			"192.0.2.7 - - [10/Oct/2023:13:55:30 +0000] \"POST /login HTTP/1.1\" 200 5 \"-\" \"c\"\n"
			"192.0.2.7 - - [10/Oct/2023:13:55:31 +0000] \"POST /login HTTP/1.1\" 401 5 \"-\" \"c\"\n"
			"192.0.2.7 - - [10/Oct/2023:13:55:32 +0000] \"POST /login HTTP/1.1\" 200 5 \"-\" \"c\"\n"
			"192.0.2.7 - - [10/Oct/2023:13:55:33 +0000] \"POST /login HTTP/1.1\" 401 5\n"
			"192.0.2.7 - - [10/Oct/2023:13:55:34 +0000] \"POST /login HTTP/1.1\" 200 5\n",
			0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t2/minute\t2\t-\n"
			 "1\tallow\t2/minute\t2\t-\n"
			 "2\tallow\t2/minute\t1\t-\n"
			 "3\tallow\t2/minute\t1\t-\n"
			 "4\tdeny\t2/minute\t0\t57\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "");
	free(out);
	free(errs);

	out = run(rules,
		  "1700000000 192.0.2.7 POST /login\n"
		  "1700000001 192.0.2.7 POST /login\n"
		  "1700000002 192.0.2.7 POST /login\n",
		  0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t2/minute\t2\t-\n"
			 "1\tallow\t2/minute\t1\t-\n"
			 "2\tdeny\t2/minute\t0\t58\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "log:1: rule /login (t.rules:1) has deduct-when=, which counts by the response status, and this line records none: its requests are counted as if every answer were one of those statuses\n");
	free(out);
	free(errs);

	cr_assert_eq(parse("192.0.2.7 - - [10/Oct/2023:13:55:33 +0000] \"GET / HTTP/1.1\" 404 5"), 1);
	cr_assert_eq(L.status, 404);
	cr_assert_eq(parse("192.0.2.7 - - [10/Oct/2023:13:55:33 +0000] \"GET / HTTP/1.1\" - 5"), 1);
	cr_assert_eq(L.status, 0);
	cr_assert_eq(parse("1700000000 192.0.2.7 GET /"), 1);
	cr_assert_eq(L.status, 0);
}

/* The statistics path is answered by a FastCGI gateway itself and never
 * limited: replay skips it (said on standard error, or on the summary's
 * first line), so that a monitor polling it is not counted against its
 * application limits. */
Test(replay, statistics_path_is_not_replayed)
{
	int status;
	char *errs;
	const char *rules = "stats /rategate-status\napplication 2/minute\n";
	const char *log = "1700000000 127.0.0.1 GET /rategate-status\n"
			  "1700000001 127.0.0.1 GET //rategate-status/\n"
			  "1700000002 127.0.0.1 GET /rategate-status?format=prometheus\n"
			  "1700000003 127.0.0.1 GET /x\n"
			  "1700000004 127.0.0.1 GET /x\n";
	char *out = run(rules, log, 0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t2/minute\t1\t-\n"
			 "1\tallow\t2/minute\t0\t-\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs, "log: 3 requests for the statistics path /rategate-status skipped (the gateway answers them itself, never limited)\n");
	free(out);
	free(errs);

	out = run(rules, log, REPLAY_SUMMARY, &status, &errs);
	cr_assert(strstr(out, "2 requests, 0 denied; 3 requests for the statistics path /rategate-status skipped\n") == out,
		  "%s", out);
	cr_assert_str_eq(errs, "");
	free(out);
	free(errs);
}

/* concurrency= and bandwidth= cannot be replayed from a log: replay says
 * so once for each rule that has them, and replays its request limits. */
Test(replay, unreplayable_options_are_said)
{
	int status;
	char *errs;
	char *out = run("/up 2/minute bandwidth=1MB/minute concurrency=2\n"
			"/c 1/minute concurrency=1\n",
			"1700000000 192.0.2.7 GET /c\n"
			"1700000001 192.0.2.7 POST /up\n"
			"1700000002 192.0.2.7 POST /up\n"
			"1700000003 192.0.2.7 GET /c\n",
			0, &status, &errs);
	cr_assert_str_eq(out,
			 "0\tallow\t1/minute\t0\t-\n"
			 "1\tallow\t2/minute\t1\t-\n"
			 "2\tallow\t2/minute\t0\t-\n"
			 "3\tdeny\t1/minute\t0\t57\n");
	cr_assert_eq(status, 0);
	cr_assert_str_eq(errs,
			 "log:1: rule /c (t.rules:2) has concurrency=, which replay cannot replay (a log records neither how long a request was in flight nor the size of its body): only its request limits are replayed\n"
			 "log:2: rule /up (t.rules:1) has concurrency= and bandwidth=, which replay cannot replay (a log records neither how long a request was in flight nor the size of its body): only its request limits are replayed\n");
	free(out);
	free(errs);
}

/* A log that cannot be read says why (a directory: fopen takes it, the
 * first read fails). */
Test(replay, read_error_says_why)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_parse("t.rules", "default 1/minute\n",
						 17, NULL, &rep);
	cr_assert_not_null(rs);
	rl_report_free(&rep);
	FILE *in = fopen("/", "r");
	cr_assert_not_null(in);
	char *out = NULL, *e = NULL;
	size_t outlen = 0, elen = 0;
	FILE *o = open_memstream(&out, &outlen);
	FILE *ef = open_memstream(&e, &elen);
	cr_expect_eq(replay_run(rs, in, "/", 0, o, ef), 1);
	fclose(in);
	fclose(o);
	fclose(ef);
	cr_expect_str_eq(e, "/: read error: Is a directory\n");
	cr_expect_str_eq(out, "");
	free(out);
	free(e);
	rl_ruleset_free(rs);
}
