/*
 * test_parse.c - the rule-file parser: every directive, option and
 * diagnostic (exact text), includes through an in-memory file system.
 */
#include <criterion/criterion.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

/* ---- an in-memory file system for includes ---- */

struct memfile {
	const char *path;
	const char *text;
	size_t len;             /* 0: strlen(text) */
};

static struct memfile *files;
static size_t nfiles;

static int
mem_read(void *ctx, const char *path, char **data, size_t *len, char *msg,
	 size_t cap)
{
	(void)ctx;
	for (size_t i = 0; i < nfiles; i++) {
		if (strcmp(files[i].path, path) == 0) {
			size_t n = files[i].len ? files[i].len : strlen(files[i].text);
			*data = malloc(n + 1);
			memcpy(*data, files[i].text, n);
			(*data)[n] = '\0';
			*len = n;
			return 0;
		}
	}
	snprintf(msg, cap, "No such file or directory");
	return -1;
}

static int
mem_glob(void *ctx, const char *pattern, char ***paths, size_t *n, char *msg,
	 size_t cap)
{
	(void)ctx;
	(void)msg;
	(void)cap;
	*paths = calloc(nfiles + 1, sizeof(**paths));
	*n = 0;
	if (strpbrk(pattern, "*?[") == NULL) {
		(*paths)[(*n)++] = strdup(pattern);
		return 0;
	}
	for (size_t i = 0; i < nfiles; i++)
		if (fnmatch(pattern, files[i].path, FNM_PATHNAME) == 0)
			(*paths)[(*n)++] = strdup(files[i].path);
	return 0;
}

static const struct rl_io memio = { NULL, mem_read, mem_glob, NULL };

/* ---- helpers ---- */

static struct rl_report rep;

static struct rl_ruleset *
parse(const char *text)
{
	rl_report_free(&rep);
	return rl_ruleset_parse("t.rules", text, strlen(text), &memio, &rep);
}

static struct rl_ruleset *
load(const char *path)
{
	rl_report_free(&rep);
	return rl_ruleset_load(path, &memio, &rep);
}

/* The single error of text, exactly. */
static void
expect_error(const char *text, const char *want)
{
	struct rl_ruleset *rs = parse(text);

	cr_assert_null(rs, "loaded: %s", text);
	cr_assert_eq(rep.nerrors, 1, "%zu errors for %s (first: %s)", rep.nerrors,
		     text, rep.nerrors ? rep.errors[0] : "");
	cr_assert_str_eq(rep.errors[0], want);
}

static void
expect_warning(const char *text, const char *want)
{
	struct rl_ruleset *rs = parse(text);

	cr_assert_not_null(rs, "not loaded: %s: %s", text,
			   rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rep.nwarnings, 1, "%zu warnings for %s", rep.nwarnings, text);
	cr_assert_str_eq(rep.warnings[0], want);
	rl_ruleset_free(rs);
}

static void
teardown(void)
{
	rl_report_free(&rep);
	files = NULL;
	nfiles = 0;
}

TestSuite(parse, .fini = teardown);

/* ---- a whole file ---- */

Test(parse, example_file)
{
	struct rl_ruleset *rs = parse(
		"# site.rules\n"
		"strategy         fixed-window\n"
		"trusted-proxies  1\n"
		"headers          on\n"
		"default          200/day; 50/hour\n"
		"application      10000/hour\n"
		"\n"
		"/slow            1/day\n"
		"/medium          1/second   defaults=add   # adds\n"
		"/ping            exempt\n"
		"/pay             1 per 10 seconds\n"
		"/api/**          1000/hour  key=header:X-Api-Key|addr\n"
		"/login           5/minute   methods=POST  scope=auth  message=\"Too many login attempts\"\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rep.nwarnings, 0);
	const struct rl_settings *s = rl_ruleset_settings(rs);
	cr_assert_eq(s->strategy, RL_FIXED_WINDOW);
	cr_assert_eq(s->proxies.hops, 1);
	cr_assert_eq(s->headers, 1);
	cr_assert_eq(s->ndefaults, 2);
	cr_assert_eq(s->defaults[0].count, 200);
	cr_assert_eq(s->defaults[0].period_ms, 86400000);
	cr_assert_str_eq(s->defaults[1].text, "50/hour");
	cr_assert_eq(s->napplication, 1);
	cr_assert_eq(s->application[0].count, 10000);
	cr_assert_eq(rl_ruleset_nrules(rs), 6);

	const struct rl_rule *r = rl_ruleset_rule(rs, 1);
	cr_assert_str_eq(r->pattern.text, "/medium");
	cr_assert_eq(r->defaults_add, 1);
	cr_assert_eq(r->line, 9);
	r = rl_ruleset_rule(rs, 2);
	cr_assert_eq(r->exempt, 1);
	cr_assert_eq(r->nlimits, 0);
	r = rl_ruleset_rule(rs, 3);
	cr_assert_eq(r->limits[0].count, 1);
	cr_assert_eq(r->limits[0].period_ms, 10000);
	cr_assert_str_eq(r->limits[0].text, "1 per 10 seconds");
	r = rl_ruleset_rule(rs, 4);
	cr_assert_eq(r->pattern.exact, 0);
	cr_assert_str_eq(r->key->text, "header:X-Api-Key|addr");
	cr_assert_eq(r->key->nalts, 2);
	cr_assert_eq(r->key->alts[0].parts[0].src, RL_KEY_HEADER);
	cr_assert_str_eq(r->key->alts[0].parts[0].var, "HTTP_X_API_KEY");
	cr_assert_eq(r->key->alts[1].parts[0].src, RL_KEY_ADDR);
	r = rl_ruleset_rule(rs, 5);
	cr_assert_eq(r->methods, RL_METHOD_POST);
	cr_assert_str_eq(r->scope, "auth");
	cr_assert_str_eq(r->message, "Too many login attempts");
	cr_assert_eq(r->strategy, RL_FIXED_WINDOW);
	rl_ruleset_free(rs);
}

Test(parse, defaults_of_settings)
{
	struct rl_ruleset *rs = parse("");

	cr_assert_not_null(rs);
	const struct rl_settings *s = rl_ruleset_settings(rs);
	cr_assert_eq(s->enabled, 1);
	cr_assert_eq(s->dry_run, 0);
	cr_assert_eq(s->headers, 1);
	cr_assert_eq(s->retry_after, RL_RETRY_SECONDS);
	cr_assert_eq(s->strategy, RL_FIXED_WINDOW);
	cr_assert_str_eq(s->key_prefix, "rg");
	cr_assert_eq(s->storage.kind, RL_STORAGE_SHM);
	cr_assert_str_eq(s->storage.path, "/dev/shm/rategate");
	cr_assert_eq(s->storage.size, 64u << 20);
	cr_assert_eq(s->ipv4_prefix, 32);
	cr_assert_eq(s->ipv6_prefix, 64);
	cr_assert_eq(s->ndefaults, 0);
	cr_assert_eq(rl_ruleset_nrules(rs), 0);
	rl_ruleset_free(rs);
}

Test(parse, globals_all_set)
{
	struct rl_ruleset *rs = parse(
		"enabled off\n"
		"dry-run on\n"
		"headers off\n"
		"ietf-headers on\n"
		"case-insensitive on\n"
		"retry-after http-date\n"
		"strategy gcra\n"
		"burst 7\n"
		"ipv4-prefix 24\n"
		"ipv6-prefix 56\n"
		"key-prefix site1\n"
		"key var:REMOTE_USER|addr\n"
		"message \"Slow down\"\n"
		"storage redis://:s3cret@10.0.0.5:6380/2?timeout=50\n"
		"trusted-proxies 10.0.0.0/8 2001:db8::/32\n"
		"proxy-header Forwarded\n"
		"listen 127.0.0.1:9000\n"
		"upstream fcgi+unix:///run/app.sock\n"
		"/Login 5/minute\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	const struct rl_settings *s = rl_ruleset_settings(rs);
	cr_assert_eq(s->enabled, 0);
	cr_assert_eq(s->dry_run, 1);
	cr_assert_eq(s->headers, 0);
	cr_assert_eq(s->ietf_headers, 1);
	cr_assert_eq(s->case_insensitive, 1);
	cr_assert_eq(s->retry_after, RL_RETRY_HTTP_DATE);
	cr_assert_eq(s->strategy, RL_GCRA);
	cr_assert_eq(s->burst, 7);
	cr_assert_eq(s->ipv4_prefix, 24);
	cr_assert_eq(s->ipv6_prefix, 56);
	cr_assert_str_eq(s->key_prefix, "site1");
	cr_assert_eq(s->key->alts[0].parts[0].src, RL_KEY_VAR);
	cr_assert_str_eq(s->message, "Slow down");
	cr_assert_eq(s->storage.kind, RL_STORAGE_REDIS);
	cr_assert_str_eq(s->storage.host, "10.0.0.5");
	cr_assert_eq(s->storage.port, 6380);
	cr_assert_eq(s->storage.db, 2);
	cr_assert_str_eq(s->storage.password, "s3cret");
	/* what -t and the log print: never the password */
	cr_assert_null(strstr(s->storage.shown, "s3cret"), "%s", s->storage.shown);
	cr_assert(strncmp(s->storage.shown, "redis://:***@10.0.0.5:6380/2", 28) == 0, "%s", s->storage.shown);
	cr_assert_eq(s->storage.timeout_ms, 50);
	cr_assert_eq(s->proxies.nnets, 2);
	cr_assert_eq(s->proxies.nets[0].bits, 8);
	cr_assert_eq(s->proxies.forwarded, 1);
	cr_assert_str_eq(s->listen, "127.0.0.1:9000");
	cr_assert_eq(s->upstream->kind, RL_UPSTREAM_FCGI_UNIX);
	cr_assert_str_eq(s->upstream->uri, "fcgi+unix:///run/app.sock");
	cr_assert_str_eq(s->upstream->path, "/run/app.sock");
	/* case-insensitive applies to patterns written before or after it */
	cr_assert_str_eq(rl_ruleset_rule(rs, 0)->pattern.text, "/login");
	cr_assert_eq(rl_ruleset_rule(rs, 0)->strategy, RL_GCRA);
	cr_assert_eq(rl_ruleset_rule(rs, 0)->burst, 7);
	rl_ruleset_free(rs);
}

Test(parse, storage_forms)
{
	struct rl_ruleset *rs = parse("storage shm:/var/lib/rategate/counters?size=128M\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.path,
			 "/var/lib/rategate/counters");
	cr_assert_eq(rl_ruleset_settings(rs)->storage.size, 128u << 20);
	rl_ruleset_free(rs);

	rs = parse("storage redis+unix:///run/redis.sock?db=3&password=pw\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.kind, RL_STORAGE_REDIS);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.path, "/run/redis.sock");
	cr_assert_eq(rl_ruleset_settings(rs)->storage.db, 3);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.password, "pw");
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.shown,
			 "redis+unix:///run/redis.sock?db=3&password=***");
	rl_ruleset_free(rs);
	rs = parse("storage redis://admin:pw2@127.0.0.1:6379?password=x&timeout=9\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.shown,
			 "redis://admin:***@127.0.0.1:6379?password=***&timeout=9");
	/* an ACL user is the userinfo's part before ':' */
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.user, "admin");
	rl_ruleset_free(rs);
	rs = parse("storage redis://:pw3@127.0.0.1\n");
	cr_assert_not_null(rs);
	cr_assert_null(rl_ruleset_settings(rs)->storage.user);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.password, "pw3");
	rl_ruleset_free(rs);
	rs = parse("storage redis+unix:///run/redis.sock?user=rg&password=pw4\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.user, "rg");
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.password, "pw4");
	rl_ruleset_free(rs);

	/* a password holding '@' and '/': the userinfo ends at the last '@',
	 * and no part of the password is shown */
	rs = parse("storage redis://:p@s/s@10.0.0.5:6380/2\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.password, "p@s/s");
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.host, "10.0.0.5");
	cr_assert_eq(rl_ruleset_settings(rs)->storage.port, 6380);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.db, 2);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.shown,
			 "redis://:***@10.0.0.5:6380/2");
	rl_ruleset_free(rs);

	rs = parse("storage redis://127.0.0.1?fallback=/var/lib/rategate/fb.shm\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.fallback_path, "/var/lib/rategate/fb.shm");
	rl_ruleset_free(rs);
	rs = parse("storage redis://127.0.0.1?fallback=fb.shm\n");
	cr_assert_null(rs);
	cr_assert_str_eq(rep.errors[0], "t.rules:1:9: bad redis fallback \"fb.shm\": expected the absolute path of a shared-memory store file");
	rl_report_free(&rep);

	/* sizes in the units of the rest of the file, and slot reservations */
	rs = parse("storage shm:rg?size=64MiB&moving-window-max=1000&concurrency-max=200\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.size, 64u << 20);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.moving_max, 1000);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.concurrency_max, 200);
	rl_ruleset_free(rs);
	rs = parse("storage shm:rg?size=2GB\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.size, 2ull << 30);
	rl_ruleset_free(rs);
	rs = parse("storage shm:rg?names=off&size=8M\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.names, 0);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.size, 8u << 20);
	rl_ruleset_free(rs);
	cr_assert_eq(rl_ruleset_settings(rs = parse("storage shm:rg\n"))->storage.names, 1);
	rl_ruleset_free(rs);
	expect_error("storage shm:rg?names=maybe\n",
		     "t.rules:1:9: bad value \"maybe\" for names: expected on or off");

	rs = parse("storage memory\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.kind, RL_STORAGE_MEMORY);
	rl_ruleset_free(rs);

	rs = parse("storage redis://localhost\n");
	cr_assert_not_null(rs);
	cr_assert_str_eq(rl_ruleset_settings(rs)->storage.host, "localhost");
	cr_assert_eq(rl_ruleset_settings(rs)->storage.port, 6379);
	cr_assert_eq(rl_ruleset_settings(rs)->storage.db, 0);
	cr_assert_null(rl_ruleset_settings(rs)->storage.password);
	rl_ruleset_free(rs);
}

Test(parse, rule_options)
{
	struct rl_ruleset *rs = parse(
		"/a 10/minute dry-run per-method cost=3 strategy=moving-window missing-key=deny key=cookie:sid+addr\n"
		"/b 1/second burst=4 strategy=gcra methods=GET,HEAD\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	const struct rl_rule *r = rl_ruleset_rule(rs, 0);
	cr_assert_eq(r->dry_run, 1);
	cr_assert_eq(r->per_method, 1);
	cr_assert_eq(r->cost, 3);
	cr_assert_eq(r->strategy, RL_MOVING_WINDOW);
	cr_assert_eq(r->missing, RL_MISSING_DENY);
	cr_assert_eq(r->key->alts[0].nparts, 2);
	cr_assert_eq(r->key->alts[0].parts[0].src, RL_KEY_COOKIE);
	cr_assert_str_eq(r->scope, "/a");
	cr_assert_eq(rl_ruleset_max_moving(rs), 10);
	r = rl_ruleset_rule(rs, 1);
	cr_assert_eq(r->burst, 4);
	cr_assert_eq(r->methods, RL_METHOD_GET | RL_METHOD_HEAD);
	rl_ruleset_free(rs);
}

/* A store too small for the rules names who asks for the room. */
Test(parse, largest_counts_name_their_rule)
{
	struct rl_ruleset *rs = parse(
		"/a 10/minute strategy=moving-window concurrency=80\n"
		"/b 30/minute;5/second strategy=moving-window\n"
		"/c 99/minute concurrency=90\n"
		"/d 20/minute strategy=moving-window concurrency=70\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_max_moving(rs), 30);
	cr_assert_str_eq(rl_ruleset_max_moving_by(rs), "the rule at t.rules:2");
	cr_assert_eq(rl_ruleset_max_inflight(rs), 90);
	cr_assert_str_eq(rl_ruleset_max_inflight_by(rs), "the rule at t.rules:3");
	rl_ruleset_free(rs);

	rs = parse("strategy moving-window\n"
		   "/a 10/minute\n"
		   "default 50/hour\n"
		   "application 40/hour\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_max_moving(rs), 50);
	cr_assert_str_eq(rl_ruleset_max_moving_by(rs), "the default limits at t.rules:3");
	cr_assert_null(rl_ruleset_max_inflight_by(rs));
	rl_ruleset_free(rs);

	rs = parse("strategy moving-window\n"
		   "application 400/hour\n"
		   "default 50/hour\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_str_eq(rl_ruleset_max_moving_by(rs), "the application limits at t.rules:2");
	rl_ruleset_free(rs);
}

/* ---- diagnostics, exact text ---- */

Test(parse, unknown_directive)
{
	expect_error("stratgy gcra\n",
		     "t.rules:1:1: unknown directive \"stratgy\": expected a path rule starting with '/' or one of strategy, default, application, trusted-proxies, headers, include, ... (see rategate.rules(5))");
}

Test(parse, bad_values)
{
	expect_error("headers maybe\n",
		     "t.rules:1:9: bad value \"maybe\" for \"headers\": expected on or off");
	expect_error("strategy leaky\n",
		     "t.rules:1:10: unknown strategy \"leaky\": expected fixed-window, fixed-window-elastic-expiry, moving-window, sliding-window-counter or gcra");
	expect_error("retry-after soon\n",
		     "t.rules:1:13: bad value \"soon\" for \"retry-after\": expected seconds or http-date");
	expect_error("ipv6-prefix 129\n",
		     "t.rules:1:13: bad value \"129\" for \"ipv6-prefix\": expected a number from 1 to 128");
	expect_error("ipv4-prefix 99999999999999999999999\n",
		     "t.rules:1:13: bad value \"99999999999999999999999\" for \"ipv4-prefix\": expected a number from 1 to 32");
	expect_error("key-prefix a:b\n",
		     "t.rules:1:12: bad value \"a:b\" for \"key-prefix\": expected up to 64 letters, digits, '_', '.' or '-'");
	expect_error("trusted-proxies 17\n",
		     "t.rules:1:17: bad hop count \"17\": expected 0 to 16");
	expect_error("trusted-proxies 10.0.0.0/33\n",
		     "t.rules:1:17: bad proxy network \"10.0.0.0/33\": expected an address or CIDR such as 10.0.0.0/8 or 2001:db8::/32 (or one hop count)");
	expect_error("proxy-header X-Real-IP\n",
		     "t.rules:1:14: bad value \"X-Real-IP\" for \"proxy-header\": expected X-Forwarded-For or Forwarded");
	expect_error("headers\n", "t.rules:1:1: \"headers\" needs a value");
	expect_error("headers on off\n",
		     "t.rules:1:12: unexpected \"off\" after the value of \"headers\"");
	expect_error("message Too many\n",
		     "t.rules:1:13: unexpected \"many\" after the value of \"message\": quote a message with spaces");
	expect_error("default\n",
		     "t.rules:1:1: \"default\" needs limits, e.g. \"default 100/hour\"");
	expect_error("key header:\n",
		     "t.rules:1:12: bad header name \"\": expected 1 to 64 letters, digits, '_' or '-'");
	expect_error("key ip\n",
		     "t.rules:1:5: bad key part \"ip\": expected addr, header:NAME, cookie:NAME, query:NAME or var:NAME");
	expect_error("key addr||addr\n",
		     "t.rules:1:10: empty key part in \"addr||addr\": expected a part between separators");
}

Test(parse, storage_errors)
{
	expect_error("storage mysql://x\n",
		     "t.rules:1:9: unknown storage \"mysql://x\": expected shm:NAME, shm:/path, memory, redis://host:port/db or redis+unix:///path");
	expect_error("storage shm:rg?size=10\n",
		     "t.rules:1:9: bad storage size \"10\": expected a size such as 64M (K, M or G, also written KB/KiB, MB/MiB, GB/GiB), at least 1M and at most 64G");
	expect_error("storage shm:rg?size=65G\n",
		     "t.rules:1:9: bad storage size \"65G\": expected a size such as 64M (K, M or G, also written KB/KiB, MB/MiB, GB/GiB), at least 1M and at most 64G");
	expect_error("storage shm:rg?moving-window-max=0\n",
		     "t.rules:1:9: bad moving-window-max \"0\": expected a count from 1 to 1000000");
	expect_error("storage shm:rg?concurrency-max=x\n",
		     "t.rules:1:9: bad concurrency-max \"x\": expected a count from 1 to 1000000");
	expect_error("storage shm:a/b\n",
		     "t.rules:1:9: bad shm name \"a/b\": expected letters, digits, '_', '.' or '-' (or an absolute path)");
	expect_error("storage redis://host:99999\n",
		     "t.rules:1:9: bad redis port in \"redis://host:99999\": expected 1 to 65535");
	expect_error("storage redis://host/x\n",
		     "t.rules:1:9: bad redis db in \"redis://host/x\": expected a number after '/'");
	expect_error("storage shm:rg?colour=blue\n",
		     "t.rules:1:9: unknown storage parameter \"colour\" for shm storage");
	expect_error("storage redis://h?timeout=0\n",
		     "t.rules:1:9: bad redis timeout \"0\": expected milliseconds from 1 to 60000");
}

Test(parse, duplicate_directive)
{
	expect_error("strategy gcra\n\nstrategy moving-window\n",
		     "t.rules:3:1: \"strategy\" is set twice (first at t.rules:1)");
}

Test(parse, limit_errors_point_into_the_line)
{
	struct rl_ruleset *rs = parse("/x   10/hour;;5/minute\n");
	cr_assert_null(rs);
	cr_assert_eq(rep.nerrors, 1);
	/* the doubled separator is at byte 13 of the line (column 14) */
	cr_assert(strncmp(rep.errors[0], "t.rules:1:14: ", 14) == 0, "%s", rep.errors[0]);

	rs = parse("default 10/fortnight\n");
	cr_assert_null(rs);
	cr_assert(strncmp(rep.errors[0], "t.rules:1:12: ", 14) == 0, "%s", rep.errors[0]);
	cr_assert(strstr(rep.errors[0], "\"fortnight\"") != NULL, "%s", rep.errors[0]);

	rs = parse("application 0/hour\n");
	cr_assert_null(rs);
	cr_assert(strncmp(rep.errors[0], "t.rules:1:13: ", 14) == 0, "%s", rep.errors[0]);
}

Test(parse, rule_errors)
{
	expect_error("/x\n",
		     "t.rules:1:3: rule for \"/x\" needs limits (e.g. 10/minute), concurrency=, bandwidth= or \"exempt\"");
	expect_error("/x methods=GET\n",
		     "t.rules:1:1: rule for \"/x\" has options but no limits: limits come right after the path");
	expect_error("/x exempt 10/minute\n",
		     "t.rules:1:11: unexpected \"10/minute\" among the options: limits come right after the path, options (name=value or a flag) after them");
	/* an unquoted value with a space; an option a settings rule cannot
	 * have, at its column (found by a review: "has options but no
	 * limits" at column 1 left the admin guessing) */
	expect_error("/x 1/hour message=Slow down\n",
		     "t.rules:1:24: unexpected \"down\" among the options: a value with spaces needs quotes (message=\"Slow down\")");
	expect_error("/x max-body=1M scope=s\n",
		     "t.rules:1:16: scope= needs limits on the rule: a rule with only max-body= or upstream= (a settings rule) may also have methods= and defaults=add, nothing else");
	expect_error("/x max-body=1M methods=GET per-method\n",
		     "t.rules:1:28: per-method needs limits on the rule: a rule with only max-body= or upstream= (a settings rule) may also have methods= and defaults=add, nothing else");
	expect_error("/x 10/minute colour=red\n",
		     "t.rules:1:14: unknown rule option \"colour\": expected exempt, dry-run, per-method, defaults=, methods=, scope=, key=, strategy=, burst=, cost=, message=, missing-key=, concurrency=, max-body=, bandwidth=, deduct-when= or upstream=");
	expect_error("/x 10/minute methods=GET,FETCH\n",
		     "t.rules:1:26: unknown method \"FETCH\" in methods=: expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT or TRACE, separated by ','");
	expect_error("/x 10/minute defaults=merge\n",
		     "t.rules:1:23: bad value \"merge\" for defaults=: expected add or replace");
	expect_error("/x 10/minute cost=0\n",
		     "t.rules:1:19: bad value \"0\" for cost=: expected a number from 1 to 1000000000");
	expect_error("/x 10/minute cost=2 cost=3\n",
		     "t.rules:1:21: option \"cost\" given twice");
	expect_error("/x 10/minute exempt=yes\n",
		     "t.rules:1:14: option \"exempt\" takes no value");
	expect_error("/x 10/minute scope=\n",
		     "t.rules:1:20: bad scope \"\": expected up to 64 letters, digits, '_', '.' or '-'");
	expect_error("/x 10/minute strategy=bucket\n",
		     "t.rules:1:23: unknown strategy \"bucket\": expected fixed-window, fixed-window-elastic-expiry, moving-window, sliding-window-counter or gcra");
	expect_error("/x 10/minute missing-key=skip\n",
		     "t.rules:1:26: bad value \"skip\" for missing-key=: expected addr or deny");
	expect_error("/x exempt 10/minute\n",
		     "t.rules:1:11: unexpected \"10/minute\" among the options: limits come right after the path, options (name=value or a flag) after them");
	expect_error("/x 10/minute message=\"a\n",
		     "t.rules:1:22: unterminated quoted string \"\\\"a\": expected a closing '\"'");
	expect_error("/x 10/minute message=\"a\\tb\"\n",
		     "t.rules:1:24: unknown escape \"\\t\" in a quoted string: expected \\\" or \\\\");
	expect_error("/x 1000001/minute strategy=moving-window\n",
		     "t.rules:1:4: moving-window limit \"1000001/minute\" counts more than 100000 hits (it keeps one timestamp per hit): use sliding-window-counter or gcra");
	/* a strategy the rule's line does not name is said where it is set
	 * (here in another file: the rule alone does not explain it) */
	struct memfile fs[] = {
		{ "/g/site.rules", "default 200000/minute\n/up 1/second bandwidth=1M/minute\n/x 200000/minute strategy=gcra\ninclude g.rules\n", 0 },
		{ "/g/g.rules", "# globals\nstrategy moving-window\n", 0 },
	};
	files = fs;
	nfiles = sizeof(fs) / sizeof(fs[0]);
	cr_assert_null(load("/g/site.rules"));
	cr_assert_eq(rep.nerrors, 2);
	cr_expect_str_eq(rep.errors[0],
			 "/g/site.rules:1:9: moving-window limit \"200000/minute\" counts more than 100000 hits (it keeps one timestamp per hit): use sliding-window-counter or gcra; moving-window is the global strategy, set at /g/g.rules:2");
	cr_expect_str_eq(rep.errors[1],
			 "/g/site.rules:2:24: bandwidth limits cannot use moving-window (it keeps one timestamp per counted unit): use sliding-window-counter; moving-window is the global strategy, set at /g/g.rules:2");
}

Test(parse, pattern_errors)
{
	struct rl_ruleset *rs = parse("/a** 1/second\n");
	cr_assert_null(rs);
	cr_assert_eq(rep.nerrors, 1);
	cr_assert(strncmp(rep.errors[0], "t.rules:1:", 10) == 0, "%s", rep.errors[0]);
	cr_assert(strstr(rep.errors[0], "\"/a**\"") != NULL, "%s", rep.errors[0]);
}

/* Errors inside a quoted value point at the fault, as unquoted ones do;
 * a quoted limit string is the limit string. */
Test(parse, quoted_values)
{
	expect_error("/a 1/day methods=\"GET,FOO\"\n",
		     "t.rules:1:23: unknown method \"FOO\" in methods=: expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT or TRACE, separated by ','");
	expect_error("/a 1/day key=\"header:X|adr\"\n",
		     "t.rules:1:24: bad key part \"adr\": expected addr, header:NAME, cookie:NAME, query:NAME or var:NAME");
	expect_error("/a 1/day deduct-when=\"401,abc\"\n",
		     "t.rules:1:27: bad status \"abc\" in deduct-when=: expected a status from 100 to 599, a class such as 4xx or a range such as 401-403, separated by ','");
	expect_error("message \"a\tb\"\n",
		     "t.rules:1:11: control byte 0x09 (a tab) in the message: expected printable text");
	expect_error("/a 1/day message=\"x\ty\"\n",
		     "t.rules:1:20: control byte 0x09 (a tab) in the message: expected printable text");
	/* with an escape the columns no longer line up: the value's start */
	expect_error("/a 1/day methods=\"G\\\"T\"\n",
		     "t.rules:1:18: unknown method \"G\\\"T\" in methods=: expected GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, CONNECT or TRACE, separated by ','");
	expect_error("/a \"5/minte\"\n",
		     "t.rules:1:7: bad limit unit \"minte\": expected second, minute, hour, day, month or year");

	struct rl_ruleset *rs = parse("default \"10/hour\"\napplication \"10 per hour; 100/day\"\n/a \"5/minute\" methods=GET\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_settings(rs)->ndefaults, 1);
	cr_assert_eq(rl_ruleset_settings(rs)->napplication, 2);
	cr_assert_eq(rl_ruleset_rule(rs, 0)->nlimits, 1);
	cr_assert_eq(rl_ruleset_rule(rs, 0)->limits[0].count, 5);
	rl_ruleset_free(rs);
}

Test(parse, warnings)
{
	struct rl_ruleset *rs;

	expect_warning("/a//b 1/second\n",
		       "t.rules:1:1: warning: rule \"/a//b\" can never match: request paths are matched after normalisation (no '//', '.', '..', ';' or trailing '/'); write it as a normalised path");
	expect_warning("/m?x 1/second\n",
		       "t.rules:1:3: warning: '?' in rule \"/m?x\" matches only a request path that spells it %3F: the query string is never part of the path, so it cannot be matched here");
	expect_warning("/h#x 1/second\n",
		       "t.rules:1:3: warning: '#' in rule \"/h#x\" matches only a request path that spells it %23: a raw '#' starts the fragment, which is not part of the path");
	expect_warning("/n%20b 1/second\n",
		       "t.rules:1:3: warning: '%' in rule \"/n%20b\" matches only a request path that spells it %25: patterns are matched against the decoded path: write the character itself, not its escape");
	expect_warning("/a 1/second\n/a 2/second\n",
		       "t.rules:2:1: warning: rule \"/a\" can never match: t.rules:1 has the same pattern");
	expect_warning("/a 1/second methods=GET,POST\n/a 2/second methods=POST\n",
		       "t.rules:2:1: warning: rule \"/a\" can never match: t.rules:1 has the same pattern for these methods");
	expect_warning("/a 1/second burst=3\n",
		       "t.rules:1:19: warning: burst= only applies to the gcra strategy; this rule uses fixed-window");
	expect_warning("/a 5/second cost=6\n",
		       "t.rules:1:4: warning: cost 6 exceeds limit \"5/second\": every request will be denied");
	expect_warning("/a exempt cost=2\n/b 1/second\n",
		       "t.rules:1:1: warning: options other than methods=, max-body= and upstream= have no effect on an exempt rule");

	expect_warning("storage memory\n/ping exempt\n",
		       "t.rules:1:1: warning: nothing is limited: no default, application or path limits (every request is allowed)");
	expect_warning("",
		       "t.rules:1:1: warning: nothing is limited: no default, application or path limits (every request is allowed)");
	expect_warning("\xef\xbb\xbf/a 1/second\n",
		       "t.rules:1:1: warning: the file starts with a UTF-8 byte order mark: ignored (save the file without one)");
	expect_error("\xef\xbb\xbf/a 1/eon\n",
		     "t.rules:1:6: bad limit unit \"eon\": expected second, minute, hour, day, month or year");
	expect_error("/a 0per hour\n",
		     "t.rules:1:4: bad limit count \"0\": count must be at least 1; use `exempt` to lift limits");
	expect_error("/a 0PER 2 minutes\n",
		     "t.rules:1:4: bad limit count \"0\": count must be at least 1; use `exempt` to lift limits");
	expect_error("/a 0 / hour\n",
		     "t.rules:1:4: bad limit count \"0\": count must be at least 1; use `exempt` to lift limits");
	expect_error("/x 0\"/hour\"\n",
		     "t.rules:1:4: bad limit count \"0\": count must be at least 1; use `exempt` to lift limits");
	/* a settings rule after a rule with limits on the same pattern is
	 * never reached; before it, both apply */
	expect_warning("/u 10/hour\n/u max-body=10\n",
		       "t.rules:2:1: warning: rule \"/u\" can never match: t.rules:1 has the same pattern");
	expect_warning("/api/** 5/hour\n/api/** max-body=10\n",
		       "t.rules:2:1: warning: rule \"/api/**\" can never match: t.rules:1 has the same pattern");
	rs = parse("/u max-body=10\n/u 10/hour\n/u max-body=20 upstream=cgi:/bin/true\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rep.nwarnings, 1, "%s", rep.nwarnings ? rep.warnings[0] : "");
	cr_assert_str_eq(rep.warnings[0], "t.rules:3:1: warning: rule \"/u\" can never match: t.rules:2 has the same pattern");
	rl_ruleset_free(rs);
	expect_error("/a 0x10/hour\n",
		     "t.rules:1:5: bad limit \"0x10/hour\": expected \"/\" or \"per\" after the count, found \"x10/hour\"");
	expect_warning("/a 1/second key=addr+addr\n",
		       "t.rules:1:17: warning: key \"addr+addr\": the same part twice in one alternative (counted once)");
	expect_warning("key header:x-api-key|header:X_API_KEY\ndefault 1/second\n",
		       "t.rules:1:5: warning: key \"header:x-api-key|header:X_API_KEY\": an alternative is given twice (header names differing in case, '-' or '_' are one variable)");
	expect_warning("/a 1/second key=addr|header:X-Api-Key\n",
		       "t.rules:1:17: warning: key \"addr|header:X-Api-Key\": the alternatives after addr are never used (a client address is always there)");
	/* methods in any case, as requests' methods are compared */
	rs = parse("/a 1/second methods=post,Get\n");
	cr_assert_not_null(rs);
	/* GET admits HEAD (servers run GET's handler for it) */
	cr_assert_eq(rl_ruleset_rule(rs, 0)->methods,
		     RL_METHOD_POST | RL_METHOD_GET | RL_METHOD_HEAD);
	rl_ruleset_free(rs);

	/* different methods on one pattern are fine */
	rs = parse("/a 1/second methods=GET\n/a 2/second methods=POST\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rep.nwarnings, 0);
	rl_ruleset_free(rs);
}

Test(parse, every_error_reported_nothing_loaded)
{
	struct rl_ruleset *rs = parse("strategy x\n/ok 1/second\nheaders 2\n/y 1/eon\n");

	cr_assert_null(rs);
	cr_assert_eq(rep.nerrors, 3);
	cr_assert(strncmp(rep.errors[0], "t.rules:1:10: ", 14) == 0);
	cr_assert(strncmp(rep.errors[1], "t.rules:3:9: ", 13) == 0);
	cr_assert(strncmp(rep.errors[2], "t.rules:4:", 10) == 0);
}

/* ---- bad bytes ---- */

Test(parse, nul_and_control_bytes)
{
	static const char text[] = "/a 1/second\n/b\0 1/second\n";
	struct rl_ruleset *rs;

	rl_report_free(&rep);
	rs = rl_ruleset_parse("t.rules", text, sizeof(text) - 1, NULL, &rep);
	cr_assert_null(rs);
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0], "t.rules:2:3: NUL byte in a rule file");

	expect_error("/a 1/second\x01\n",
		     "t.rules:1:12: control byte 0x01 in a rule file: expected text");
}

Test(parse, long_line)
{
	size_t n = 1u << 20;
	char *text = malloc(n + 2);
	memset(text, 'a', n);
	text[0] = '/';
	text[n] = '\n';
	text[n + 1] = '\0';
	expect_error(text, "t.rules:1:4097: line too long (1048576 bytes, at most 4096)");
	free(text);
}

Test(parse, binary_junk_is_bounded)
{
	size_t n = 200000;
	unsigned char *junk = malloc(n);
	unsigned x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (unsigned char)(x >> 16);
	}
	rl_report_free(&rep);
	struct rl_ruleset *rs = rl_ruleset_parse("junk", (char *)junk, n, NULL, &rep);
	cr_assert_null(rs);
	cr_assert_eq(rep.nerrors, RL_REPORT_MAX_ERRORS);
	cr_assert_eq(rep.truncated, 1);
	free(junk);
}

Test(parse, crlf_lines)
{
	struct rl_ruleset *rs = parse("strategy gcra\r\n/a 1/second\r\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_rule(rs, 0)->limits[0].period_ms, 1000);
	rl_ruleset_free(rs);
}

/* ---- includes ---- */

Test(parse, include_glob_relative_sorted)
{
	struct memfile fs[] = {
		{ "/etc/rg/main.rules", "default 10/minute\ninclude sites/*.rules\n/main 1/second\n", 0 },
		{ "/etc/rg/sites/b.rules", "/b 2/second\n", 0 },
		{ "/etc/rg/sites/a.rules", "/a 1/second\ninclude ../extra.rules\n", 0 },
		{ "/etc/rg/sites/../extra.rules", "application 100/hour\n", 0 },
	};
	files = fs;
	nfiles = 4;
	struct rl_ruleset *rs = load("/etc/rg/main.rules");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_nfiles(rs), 4);
	cr_assert_eq(rl_ruleset_nrules(rs), 3);
	cr_assert_str_eq(rl_ruleset_rule(rs, 0)->pattern.text, "/a");
	cr_assert_str_eq(rl_ruleset_rule(rs, 0)->file, "/etc/rg/sites/a.rules");
	cr_assert_str_eq(rl_ruleset_rule(rs, 1)->pattern.text, "/b");
	cr_assert_str_eq(rl_ruleset_rule(rs, 2)->pattern.text, "/main");
	cr_assert_eq(rl_ruleset_settings(rs)->napplication, 1);
	rl_ruleset_free(rs);
}

/* "include *.rules" in a file that the glob matches means the other
 * files; a file included twice is read once, with a warning. */
Test(parse, include_self_glob_and_twice)
{
	struct memfile fs[] = {
		{ "/s/site.rules", "default 10/minute\ninclude *.rules\n", 0 },
		{ "/s/a.rules", "/a 1/second\n", 0 },
		{ "/s/b.rules", "/b 1/second\ninclude a.rules\n", 0 },
	};
	files = fs;
	nfiles = sizeof(fs) / sizeof(fs[0]);

	struct rl_ruleset *rs = load("/s/site.rules");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_nfiles(rs), 3);
	cr_assert_eq(rl_ruleset_nrules(rs), 2);
	cr_assert_eq(rep.nwarnings, 1);
	cr_assert_str_eq(rep.warnings[0],
			 "/s/b.rules:2:9: warning: \"/s/a.rules\" was already included (at /s/site.rules:2): not read again");
	rl_ruleset_free(rs);
}

Test(parse, include_errors)
{
	struct memfile fs[] = {
		{ "/r/main.rules", "include missing.rules\n", 0 },
		{ "/r/cyc.rules", "/x 1/second\ninclude cyc2.rules\n", 0 },
		{ "/r/cyc2.rules", "include cyc.rules\n", 0 },
		{ "/r/dup.rules", "strategy gcra\ninclude dup2.rules\n", 0 },
		{ "/r/dup2.rules", "\nstrategy gcra\n", 0 },
		{ "/r/bad.rules", "include sub/bad2.rules\n", 0 },
		{ "/r/sub/bad2.rules", "/x 1/second\n/y 1/lightyear\n", 0 },
		{ "/r/none.rules", "include nothing/*.rules\n/x 1/second\n", 0 },
		{ "/r/site.rules", "/x 1/second\ninclude empty.rules\ninclude comment.rules\n", 0 },
		{ "/r/empty.rules", "", 0 },
		{ "/r/comment.rules", "# nothing yet\n", 0 },
	};
	files = fs;
	nfiles = sizeof(fs) / sizeof(fs[0]);

	cr_assert_null(load("/r/main.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/r/main.rules:1:9: cannot read included file \"/r/missing.rules\": No such file or directory");

	cr_assert_null(load("/r/cyc.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/r/cyc2.rules:1:9: include cycle: \"/r/cyc.rules\" is already being read");

	cr_assert_null(load("/r/dup.rules"));
	cr_assert_str_eq(rep.errors[0],
			 "/r/dup2.rules:2:1: \"strategy\" is set twice (first at /r/dup.rules:1)");

	cr_assert_null(load("/r/bad.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert(strncmp(rep.errors[0], "/r/sub/bad2.rules:2:", 20) == 0, "%s", rep.errors[0]);

	cr_assert_null(load("/r/nope.rules"));
	cr_assert_str_eq(rep.errors[0],
			 "/r/nope.rules:1:1: cannot read rule file: No such file or directory");

	struct rl_ruleset *rs = load("/r/none.rules");
	cr_assert_not_null(rs);
	cr_assert_eq(rep.nwarnings, 1);
	cr_assert_str_eq(rep.warnings[0],
			 "/r/none.rules:1:9: warning: include \"/r/nothing/*.rules\" matches no file");
	rl_ruleset_free(rs);

	/* an included file of 0 bytes (being written?) is refused: loading
	 * it would lift its limits; one with only a comment is empty on
	 * purpose */
	cr_assert_null(load("/r/site.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/r/site.rules:2:9: included file \"/r/empty.rules\" is empty (still being written?): loading it would lift its limits; put a comment in it to keep it empty on purpose");

	cr_assert_null(parse("include x.rules\n"));
}

/* The including file's directory is a name, not a glob: "site[1]" holds
 * '[' and '*' and '\' in its name, and a plain include there is read (and a
 * missing one an error), a glob include matches its files. */
Test(parse, include_from_a_directory_named_like_a_glob)
{
	struct memfile fs[] = {
		{ "/srv/site[1]*\\/main.rules", "include a.rules\ninclude sites/*.rules\n", 0 },
		{ "/srv/site[1]*\\/a.rules", "/a 1/second\n", 0 },
		{ "/srv/site[1]*\\/sites/b.rules", "/b 1/second\n", 0 },
		{ "/srv/site[1]*\\/missing.rules", "include nothere.rules\n", 0 },
	};
	files = fs;
	nfiles = sizeof(fs) / sizeof(fs[0]);

	struct rl_ruleset *rs = load("/srv/site[1]*\\/main.rules");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rep.nwarnings, 0, "%s", rep.nwarnings ? rep.warnings[0] : "");
	cr_assert_eq(rl_ruleset_nfiles(rs), 3);
	cr_assert_eq(rl_ruleset_nrules(rs), 2);
	cr_assert_str_eq(rl_ruleset_rule(rs, 0)->pattern.text, "/a");
	cr_assert_str_eq(rl_ruleset_rule(rs, 1)->pattern.text, "/b");
	rl_ruleset_free(rs);

	cr_assert_null(load("/srv/site[1]*\\/missing.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/srv/site[1]*\\/missing.rules:1:9: cannot read included file \"/srv/site[1]*\\/nothere.rules\": No such file or directory");
}

/* Only the include's own argument makes it a glob: a '*' further on the
 * line (a comment) does not. */
Test(parse, include_glob_chars_after_the_argument)
{
	struct memfile fs[] = {
		{ "/c/main.rules", "include a.rules # not *.rules\n", 0 },
	};
	files = fs;
	nfiles = sizeof(fs) / sizeof(fs[0]);

	cr_assert_null(load("/c/main.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/c/main.rules:1:9: cannot read included file \"/c/a.rules\": No such file or directory");
}

Test(parse, include_depth)
{
	/* a chain of 100 files: depth is capped, with one clear error */
	static char names[100][32], texts[100][48];
	struct memfile fs[100];
	for (int i = 0; i < 100; i++) {
		snprintf(names[i], sizeof(names[i]), "/d/f%d.rules", i);
		snprintf(texts[i], sizeof(texts[i]), "include f%d.rules\n", i + 1);
		fs[i].path = names[i];
		fs[i].text = texts[i];
		fs[i].len = 0;
	}
	files = fs;
	nfiles = 100;
	cr_assert_null(load("/d/f0.rules"));
	cr_assert_eq(rep.nerrors, 1);
	cr_assert_str_eq(rep.errors[0],
			 "/d/f15.rules:1:9: includes nested deeper than 16: \"/d/f16.rules\" not read");
}

Test(parse, include_null_io)
{
	rl_report_free(&rep);
	cr_assert_null(rl_ruleset_parse("t.rules", "include a\n", 10, NULL, &rep));
	cr_assert_str_eq(rep.errors[0],
			 "t.rules:1:9: include is not available here (rules given as text)");
}

/* ---- responder-mode settings and options ---- */

Test(parse, responder_defaults)
{
	struct rl_ruleset *rs = parse("/a 1/second\n");

	cr_assert_not_null(rs);
	const struct rl_settings *s = rl_ruleset_settings(rs);
	cr_assert_null(s->upstream);
	cr_assert_eq(s->upstream_timeout_ms, 30000);
	cr_assert_eq(s->client_timeout_ms, 60000);
	cr_assert_eq(s->upstream_keepalive, RL_KEEPALIVE_DEFAULT);
	cr_assert_eq(s->lease_ms, 40000);
	cr_assert_eq(s->max_body, 0);
	cr_assert_eq(s->store_failure, RL_STORE_FAIL_DENY);
	cr_assert_eq(s->log_format, RL_LOG_LOGFMT);
	cr_assert_null(s->stats);
	cr_assert_eq(s->nstats_allow, 2);
	cr_assert_eq(s->stats_allow[0].net.family, 4);
	cr_assert_eq(s->stats_allow[0].bits, 32);
	cr_assert_eq(s->stats_allow[0].net.b[0], 127);
	cr_assert_eq(s->stats_allow[1].net.family, 6);
	cr_assert_eq(s->stats_allow[1].bits, 128);
	cr_assert_eq(s->stats_allow[1].net.b[15], 1);
	const struct rl_rule *r = rl_ruleset_rule(rs, 0);
	cr_assert_eq(r->max_body, 0);
	cr_assert_eq(r->nbandwidth, 0);
	cr_assert_eq(r->deduct, 0);
	cr_assert_null(r->upstream);
	cr_assert_eq(rl_ruleset_max_inflight(rs), 0);
	rl_ruleset_free(rs);
}

Test(parse, responder_globals)
{
	struct rl_ruleset *rs = parse(
		"upstream fcgi://127.0.0.1:9000\n"
		"upstream-timeout 5s\n"
		"client-timeout 1500ms\n"
		"upstream-keepalive 0\n"
		"concurrency-lease 2m\n"
		"max-body 10MB\n"
		"store-failure allow\n"
		"log-format json\n"
		"stats /rategate/stats\n"
		"stats-allow 10.0.0.0/8 ::1 192.0.2.7\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rep.nwarnings, 0);
	const struct rl_settings *s = rl_ruleset_settings(rs);
	cr_assert_eq(s->upstream->kind, RL_UPSTREAM_FCGI);
	cr_assert_str_eq(s->upstream->host, "127.0.0.1");
	cr_assert_eq(s->upstream->port, 9000);
	cr_assert_null(s->upstream->path);
	cr_assert_eq(s->upstream_timeout_ms, 5000);
	cr_assert_eq(s->client_timeout_ms, 1500);
	cr_assert_eq(s->upstream_keepalive, 0);
	cr_assert_eq(s->lease_ms, 120000);
	cr_assert_eq(s->max_body, 10u << 20);
	cr_assert_eq(s->store_failure, RL_STORE_FAIL_ALLOW);
	cr_assert_eq(s->log_format, RL_LOG_JSON);
	cr_assert_str_eq(s->stats, "/rategate/stats");
	cr_assert_eq(s->nstats_allow, 3);
	cr_assert_eq(s->stats_allow[0].bits, 8);
	cr_assert_eq(s->stats_allow[1].net.family, 6);
	cr_assert_eq(s->stats_allow[2].bits, 32);
	rl_ruleset_free(rs);

	/* the lease follows upstream-timeout when not set */
	rs = parse("upstream-timeout 90s\n");
	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_settings(rs)->lease_ms, 100000);
	rl_ruleset_free(rs);

	rs = parse("stats off\nmax-body none\nstore-failure deny\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_null(rl_ruleset_settings(rs)->stats);
	cr_assert_eq(rl_ruleset_settings(rs)->max_body, 0);
	rl_ruleset_free(rs);

	/* fallback is for redis, whichever line comes first */
	rs = parse("store-failure fallback\nstorage redis://127.0.0.1\n");
	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rl_ruleset_settings(rs)->store_failure, RL_STORE_FAIL_FALLBACK);
	rl_ruleset_free(rs);
}

Test(parse, upstream_forms)
{
	static const struct {
		const char *uri;
		enum rl_upstream_kind kind;
		const char *path, *host;
		unsigned port;
	} ok[] = {
		{ "cgi:/usr/lib/cgi-bin/app.cgi", RL_UPSTREAM_CGI, "/usr/lib/cgi-bin/app.cgi", NULL, 0 },
		{ "fcgi://127.0.0.1:9000", RL_UPSTREAM_FCGI, NULL, "127.0.0.1", 9000 },
		{ "fcgi://[::1]:9001", RL_UPSTREAM_FCGI, NULL, "::1", 9001 },
		{ "fcgi://[2001:db8::5]:1", RL_UPSTREAM_FCGI, NULL, "2001:db8::5", 1 },
		{ "fcgi://localhost:65535", RL_UPSTREAM_FCGI, NULL, "localhost", 65535 },
		{ "fcgi+unix:///run/php/fpm.sock", RL_UPSTREAM_FCGI_UNIX, "/run/php/fpm.sock", NULL, 0 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char text[256];
		snprintf(text, sizeof(text), "upstream %s\n/x 1/second upstream=%s\n",
			 ok[i].uri, ok[i].uri);
		struct rl_ruleset *rs = parse(text);
		cr_assert_not_null(rs, "%s: %s", ok[i].uri, rep.nerrors ? rep.errors[0] : "");
		const struct rl_upstream *us[2] = {
			rl_ruleset_settings(rs)->upstream,
			rl_ruleset_rule(rs, 0)->upstream,
		};
		for (int k = 0; k < 2; k++) {
			const struct rl_upstream *u = us[k];
			cr_assert_eq(u->kind, ok[i].kind, "%s", ok[i].uri);
			cr_assert_str_eq(u->uri, ok[i].uri);
			if (ok[i].path)
				cr_assert_str_eq(u->path, ok[i].path);
			else
				cr_assert_null(u->path);
			if (ok[i].host)
				cr_assert_str_eq(u->host, ok[i].host);
			else
				cr_assert_null(u->host);
			cr_assert_eq(u->port, ok[i].port, "%s", ok[i].uri);
		}
		rl_ruleset_free(rs);
	}
}

/* listen: a port out of 1..65535 would be wrapped into 16 bits by the
 * resolver (70000 is 4464) or be random (0), so it is refused here, at
 * the port; a socket path or HOST:PORT is taken. */
Test(parse, listen_ports)
{
	expect_error("listen 127.0.0.1:70000\n",
		     "t.rules:1:18: bad port \"70000\" in listen: expected 1 to 65535");
	expect_error("listen 127.0.0.1:0\n",
		     "t.rules:1:18: bad port \"0\" in listen: expected 1 to 65535");
	expect_error("listen [::1]:9x\n",
		     "t.rules:1:14: bad port \"9x\" in listen: expected 1 to 65535");
	expect_error("listen localhost\n",
		     "t.rules:1:8: bad value \"localhost\" for \"listen\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000)");
	/* a host name, a network, an IPv6 address without brackets: what
	 * the gateway would refuse at start (a review found -t passing
	 * "localhost:21481") */
	static const char *const bad_hosts[] = { "localhost:9000", "10.0.0.0/8:80", "::1:9000", "[localhost]:80" };
	for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		char text[80], want[300];
		snprintf(text, sizeof(text), "listen %s\n", bad_hosts[i]);
		snprintf(want, sizeof(want), "t.rules:1:8: bad value \"%s\" for \"listen\": expected a unix socket path (/path or unix:/path) or a numeric address and port (127.0.0.1:9000, [::1]:9000), not a host name",
			 bad_hosts[i]);
		expect_error(text, want);
	}
	static const char *const good[] = {
		"127.0.0.1:1", "127.0.0.1:65535", "[::1]:9000", "/run/rategate.sock",
		"unix:/run/rategate.sock", "0.0.0.0:80", "[::]:80",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char text[80];
		snprintf(text, sizeof(text), "listen %s\n", good[i]);
		struct rl_ruleset *rs = parse(text);
		cr_assert_not_null(rs, "%s", good[i]);
		cr_expect_str_eq(rl_ruleset_settings(rs)->listen, good[i]);
		rl_ruleset_free(rs);
	}
}

Test(parse, upstream_errors)
{
	expect_error("upstream unix:/run/app.sock\n",
		     "t.rules:1:10: unknown upstream \"unix:/run/app.sock\": expected cgi:/path/to/script, fcgi://HOST:PORT or fcgi+unix:///path/to.sock");
	expect_error("upstream cgi:app.cgi\n",
		     "t.rules:1:14: bad CGI script \"app.cgi\" in upstream: expected cgi:/absolute/path/to/script");
	expect_error("upstream cgi:/cgi-bin/\n",
		     "t.rules:1:14: bad CGI script \"/cgi-bin/\" in upstream: expected cgi:/absolute/path/to/script");
	expect_error("upstream fcgi://app.internal:9000\n",
		     "t.rules:1:17: bad host \"app.internal\" in upstream: expected a numeric IPv4 address, [IPv6] or localhost (names are not resolved)");
	expect_error("upstream fcgi://[::1:9000\n",
		     "t.rules:1:17: bad host \"[::1:9000\" in upstream: expected a numeric IPv4 address, [IPv6] or localhost");
	expect_error("upstream fcgi://127.0.0.1\n",
		     "t.rules:1:26: missing port in upstream \"fcgi://127.0.0.1\": expected fcgi://HOST:PORT");
	expect_error("upstream fcgi://127.0.0.1:0\n",
		     "t.rules:1:27: bad port \"0\" in upstream: expected 1 to 65535");
	expect_error("upstream fcgi://[::1]:70000\n",
		     "t.rules:1:23: bad port \"70000\" in upstream: expected 1 to 65535");
	expect_error("upstream fcgi://127.0.0.1:9000/app\n",
		     "t.rules:1:27: bad port \"9000/app\" in upstream: expected 1 to 65535");
	expect_error("upstream fcgi+unix://run/app.sock\n",
		     "t.rules:1:22: bad socket \"run/app.sock\" in upstream: expected fcgi+unix:///absolute/path/to.sock");
	char longsock[200];
	snprintf(longsock, sizeof(longsock), "upstream fcgi+unix:///%0120d\n", 0);
	expect_error(longsock,
		     "t.rules:1:22: socket path \"/000000000000000000000000000000000000000...\" in upstream is longer than 107 bytes (the most a unix socket address holds)");
	/* in a rule option, the column is inside the option's value */
	expect_error("/x 1/second upstream=fcgi://10.0.0.1:http\n",
		     "t.rules:1:38: bad port \"http\" in upstream: expected 1 to 65535");
	expect_error("upstream cgi:/a\nupstream cgi:/b\n",
		     "t.rules:2:1: \"upstream\" is set twice (first at t.rules:1)");
}

Test(parse, responder_global_errors)
{
	expect_error("upstream-timeout 0\n",
		     "t.rules:1:18: bad value \"0\" for \"upstream-timeout\": expected a duration from 1ms to 24h");
	expect_error("upstream-timeout 25h\n",
		     "t.rules:1:18: bad value \"25h\" for \"upstream-timeout\": expected a duration from 1ms to 24h");
	expect_error("upstream-timeout 10x\n",
		     "t.rules:1:20: bad duration unit \"x\": expected ms, s, m or h; a bare number is seconds");
	expect_error("client-timeout 50ms\n",
		     "t.rules:1:16: bad value \"50ms\" for \"client-timeout\": expected a duration from 100ms to 24h");
	expect_error("client-timeout 2d\n",
		     "t.rules:1:17: bad duration unit \"d\": expected ms, s, m or h; a bare number is seconds");
	expect_error("concurrency-lease 500ms\n",
		     "t.rules:1:19: bad value \"500ms\" for \"concurrency-lease\": expected a duration from 1s to 48h");
	expect_warning("upstream-timeout 60s\nconcurrency-lease 30s\ndefault 1/second\n",
		       "t.rules:2:19: warning: concurrency-lease 30s is shorter than upstream-timeout 1m: a slow request's in-flight slot may expire while it still runs");
	expect_error("max-body 0\n",
		     "t.rules:1:10: bad value \"0\" for \"max-body\": expected at least 1 byte (or none for no limit)");
	expect_error("max-body 10 XB\n",
		     "t.rules:1:13: unexpected \"XB\" after the value of \"max-body\"");
	expect_error("max-body 10XB\n",
		     "t.rules:1:12: bad size unit \"XB\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)");
	expect_error("max-body \"10 XB\"\n",
		     "t.rules:1:14: bad size unit \"XB\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)");
	expect_error("store-failure open\n",
		     "t.rules:1:15: bad value \"open\" for \"store-failure\": expected deny, allow or fallback");
	expect_error("store-failure fallback\n",
		     "t.rules:1:15: store-failure fallback needs redis storage (it falls back to this host's shared-memory store while Redis is away): use deny or allow");
	expect_error("log-format xml\n",
		     "t.rules:1:12: bad value \"xml\" for \"log-format\": expected logfmt or json");
	expect_error("stats rategate\n",
		     "t.rules:1:7: bad value \"rategate\" for \"stats\": expected a URL path in normalised form such as /rategate/stats (or off)");
	expect_error("stats /a//stats\n",
		     "t.rules:1:7: bad value \"/a//stats\" for \"stats\": expected a URL path in normalised form such as /rategate/stats (or off)");
	expect_error("stats /stats?x=1\n",
		     "t.rules:1:7: bad value \"/stats?x=1\" for \"stats\": expected a URL path in normalised form such as /rategate/stats (or off)");
	expect_error("stats /stats\nstats-allow 127.0.0.1 10.0.0.0/33\n",
		     "t.rules:2:23: bad stats-allow network \"10.0.0.0/33\": expected an address or CIDR such as 127.0.0.1, 10.0.0.0/8 or ::1");
	expect_error("stats-allow\n",
		     "t.rules:1:1: \"stats-allow\" needs networks, e.g. \"stats-allow 127.0.0.1 ::1 10.0.0.0/8\"");
	expect_warning("stats-allow 10.0.0.0/8\ndefault 1/second\n",
		       "t.rules:1:1: warning: stats-allow has no effect without stats PATH");
}

Test(parse, max_body_option)
{
	struct rl_ruleset *rs = parse(
		"max-body 1M\n"
		"/a 1/second\n"
		"/b 1/second max-body=512K\n"
		"/c 1/second max-body=none\n"
		"/d 1/second max-body=off\n"
		"/e exempt max-body=\"2 GiB\"\n"
		"/f max-body=10M\n"
		"/g max-body=10M upstream=cgi:/bin/g methods=POST defaults=add\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	cr_assert_eq(rep.nwarnings, 0, "%s", rep.nwarnings ? rep.warnings[0] : "");
	cr_assert_eq(rl_ruleset_settings(rs)->max_body, 1u << 20);
	cr_assert_eq(rl_ruleset_rule(rs, 0)->max_body, 1u << 20);
	cr_assert_eq(rl_ruleset_rule(rs, 1)->max_body, 512u << 10);
	cr_assert_eq(rl_ruleset_rule(rs, 2)->max_body, 0);
	cr_assert_eq(rl_ruleset_rule(rs, 3)->max_body, 0);
	cr_assert_eq(rl_ruleset_rule(rs, 4)->max_body, 2ULL << 30);
	/* a rule of only max-body= / upstream=: a settings rule (its limits
	 * are the next matching rule's, or the defaults: test_decide) */
	cr_assert_eq(rl_ruleset_rule(rs, 5)->max_body, 10u << 20);
	cr_assert_eq(rl_ruleset_rule(rs, 5)->settings_only, 1);
	cr_assert_eq(rl_ruleset_rule(rs, 5)->sets_max_body, 1);
	cr_assert_eq(rl_ruleset_rule(rs, 5)->nlimits, 0);
	cr_assert_eq(rl_ruleset_rule(rs, 6)->settings_only, 1);
	cr_assert_str_eq(rl_ruleset_rule(rs, 6)->upstream->path, "/bin/g");
	cr_assert_eq(rl_ruleset_rule(rs, 0)->settings_only, 0);
	cr_assert_eq(rl_ruleset_rule(rs, 0)->sets_max_body, 0);
	cr_assert_eq(rl_ruleset_rule(rs, 1)->sets_max_body, 1);
	rl_ruleset_free(rs);

	expect_error("/x 1/second max-body=0\n",
		     "t.rules:1:22: bad value \"0\" for max-body=: expected at least 1 byte (or none to lift the global max-body)");
	expect_error("/x 1/second max-body=5Q\n",
		     "t.rules:1:23: bad size unit \"Q\": expected B, K, KB, KiB, M, MB, MiB, G, GB or GiB (all 1024-based)");
	expect_error("/x max-body=1M defaults=replace\n",
		     "t.rules:1:1: rule for \"/x\" has no limits of its own, so the next matching rule's limits (or the defaults) apply: remove defaults=replace (or use exempt for no limits)");
	expect_error("/x max-body=1M cost=2\n",
		     "t.rules:1:16: cost= needs limits on the rule: a rule with only max-body= or upstream= (a settings rule) may also have methods= and defaults=add, nothing else");
}

Test(parse, bandwidth_option)
{
	struct rl_ruleset *rs = parse(
		"/up 10/minute bandwidth=10MB/minute\n"
		"/big bandwidth=\"10MB per minute; 100MB/day\" strategy=sliding-window-counter\n"
		"/huge 1/second bandwidth=2GB/hour strategy=gcra burst=5\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	const struct rl_rule *r = rl_ruleset_rule(rs, 0);
	cr_assert_eq(r->nbandwidth, 1);
	cr_assert_eq(r->bandwidth[0].count, 10u << 20);
	cr_assert_eq(r->bandwidth[0].unit, 1);
	cr_assert_str_eq(r->bandwidth[0].id, "bw/10485760/60000/fw");
	r = rl_ruleset_rule(rs, 1);
	cr_assert_eq(r->nlimits, 0);
	cr_assert_eq(r->nbandwidth, 2);
	cr_assert_str_eq(r->bandwidth[1].text, "100MB/day");
	cr_assert_str_eq(r->bandwidth[1].id, "bw/104857600/86400000/swc");
	r = rl_ruleset_rule(rs, 2);
	cr_assert_eq(r->bandwidth[0].unit, 1024);
	cr_assert_str_eq(r->bandwidth[0].id, "bw/2097152k/3600000/gcra");
	rl_ruleset_free(rs);

	expect_error("/x 1/second bandwidth=10MB/minute strategy=moving-window\n",
		     "t.rules:1:23: bandwidth limits cannot use moving-window (it keeps one timestamp per counted unit): use sliding-window-counter");
	expect_error("strategy moving-window\n/x 1/second bandwidth=10MB/minute\n",
		     "t.rules:2:23: bandwidth limits cannot use moving-window (it keeps one timestamp per counted unit): use sliding-window-counter; moving-window is the global strategy, set at t.rules:1");
	expect_error("/x 1/second bandwidth=10MB/minute;0K/hour\n",
		     "t.rules:1:35: bad bandwidth size \"0K\": at least 1 byte per period");
	expect_error("/x 1/second bandwidth=10/fortnight\n",
		     "t.rules:1:26: bad limit unit \"fortnight\": expected second, minute, hour, day, month or year");
	expect_error("/x 1/second bandwidth=\n",
		     "t.rules:1:23: empty limit string: expected a limit such as \"10MB/minute\"");
}

Test(parse, deduct_when_option)
{
	struct rl_ruleset *rs = parse(
		"/login 5/minute deduct-when=401,403\n"
		"/api 100/hour deduct-when=4xx,500-502\n"
		"/other 1/second\n");

	cr_assert_not_null(rs, "%s", rep.nerrors ? rep.errors[0] : "");
	const struct rl_rule *r = rl_ruleset_rule(rs, 0);
	cr_assert_eq(r->deduct, 1);
	cr_assert(rl_rule_deducts(r, 401));
	cr_assert(rl_rule_deducts(r, 403));
	cr_assert(!rl_rule_deducts(r, 402));
	cr_assert(!rl_rule_deducts(r, 200));
	cr_assert(!rl_rule_deducts(r, 0));
	cr_assert(!rl_rule_deducts(r, 1000));
	r = rl_ruleset_rule(rs, 1);
	for (int st = 100; st < 600; st++)
		cr_assert_eq(rl_rule_deducts(r, st),
			     (st >= 400 && st <= 502), "%d", st);
	cr_assert(!rl_rule_deducts(rl_ruleset_rule(rs, 2), 401));
	cr_assert(!rl_rule_deducts(NULL, 401));
	rl_ruleset_free(rs);

	expect_error("/x 1/second deduct-when=401,600\n",
		     "t.rules:1:29: bad status \"600\" in deduct-when=: expected a status from 100 to 599, a class such as 4xx or a range such as 401-403, separated by ','");
	expect_error("/x 1/second deduct-when=401,\n",
		     "t.rules:1:29: bad status \"\" in deduct-when=: expected a status from 100 to 599, a class such as 4xx or a range such as 401-403, separated by ','");
	expect_error("/x 1/second deduct-when=6xx\n",
		     "t.rules:1:25: bad status \"6xx\" in deduct-when=: expected a status from 100 to 599, a class such as 4xx or a range such as 401-403, separated by ','");
	expect_error("/x 1/second deduct-when=200,403-401\n",
		     "t.rules:1:29: bad status range \"403-401\" in deduct-when=: the first status is above the last");
	expect_error("/x 1/second deduct-when=400-\n",
		     "t.rules:1:25: bad status range \"400-\" in deduct-when=: expected two statuses from 100 to 599 such as 401-403");
	expect_error("/x concurrency=2 deduct-when=401\n",
		     "t.rules:1:30: deduct-when= needs request limits on the rule (it says when they are counted)");
}

Test(parse, max_inflight)
{
	struct rl_ruleset *rs = parse("/a concurrency=3\n/b 1/second concurrency=7\n/c 1/second\n");

	cr_assert_not_null(rs);
	cr_assert_eq(rl_ruleset_max_inflight(rs), 7);
	rl_ruleset_free(rs);
}

/* rl_method_bit: every method it knows in any ASCII case, and the near
 * misses (a byte more or less, a NUL inside, other bytes of the same
 * upper-cased value) are RL_METHOD_OTHER. */
Test(parse, method_bit)
{
	static const struct {
		const char *m;
		size_t len;             /* 0: strlen */
		unsigned bit;
	} cases[] = {
		{ "GET", 0, RL_METHOD_GET }, { "get", 0, RL_METHOD_GET },
		{ "gEt", 0, RL_METHOD_GET }, { "HEAD", 0, RL_METHOD_HEAD },
		{ "POST", 0, RL_METHOD_POST }, { "post", 0, RL_METHOD_POST },
		{ "PUT", 0, RL_METHOD_PUT }, { "DELETE", 0, RL_METHOD_DELETE },
		{ "PATCH", 0, RL_METHOD_PATCH }, { "options", 0, RL_METHOD_OPTIONS },
		{ "CONNECT", 0, RL_METHOD_CONNECT }, { "Trace", 0, RL_METHOD_TRACE },
		{ "", 0, RL_METHOD_OTHER }, { "GE", 0, RL_METHOD_OTHER },
		{ "GETS", 0, RL_METHOD_OTHER }, { "GET\0", 4, RL_METHOD_OTHER },
		{ "\0GET", 4, RL_METHOD_OTHER }, { "G\0T", 3, RL_METHOD_OTHER },
		{ "OPTIONSX", 0, RL_METHOD_OTHER }, { "CONNECTS", 0, RL_METHOD_OTHER },
		{ "G\xc5T", 0, RL_METHOD_OTHER }, { "gE\xd4", 0, RL_METHOD_OTHER },
		{ "DELET", 0, RL_METHOD_OTHER }, { "PROPFIND", 0, RL_METHOD_OTHER },
		{ "GET ", 0, RL_METHOD_OTHER }, { " GET", 0, RL_METHOD_OTHER },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].m);
		cr_expect_eq(rl_method_bit(cases[i].m, len), cases[i].bit,
			     "case %zu", i);
	}
}
