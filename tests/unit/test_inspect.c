/*
 * test_inspect.c - `rategate inspect` (gateway/inspect.c) on a store filled
 * through the real engine: the ranking tables, a client's counters, reset
 * of a ban, the statistics, and the usage and store errors, each with its
 * exact output.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect_run.h"
#include "rules.h"
#include "store.h"
#include "store_shm.h"

#define T0 1700000000000LL

static char dir[64], store_path[128], rules_path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/rg-inspect-test-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(store_path, sizeof(store_path), "%s/store", dir);
	snprintf(rules_path, sizeof(rules_path), "%s/site.rules", dir);
}

static void teardown(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	inspect_free();
	if (!d)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

TestSuite(inspect, .init = setup, .fini = teardown);

/* The site's rules, and traffic through rl_decide on its shm store:
 * 192.0.2.7 posts /login 7 times (5 allowed), 192.0.2.8 twice. */
static void fill(void)
{
	char text[512];
	struct rl_report rep;
	struct rl_ruleset *rs;
	struct rl_store st;
	struct rl_decision d;
	char err[512];
	FILE *f;

	snprintf(text, sizeof(text),
		 "storage shm:%s?size=1M\n"
		 "application 100/hour\n"
		 "/login 5/minute\n", store_path);
	f = fopen(rules_path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	rs = rl_ruleset_parse("site.rules", text, strlen(text), NULL, &rep);
	cr_assert_not_null(rs);
	rl_report_free(&rep);
	cr_assert_eq(store_open(rs, NULL, &st, err, sizeof(err)), 0, "%s",
		     err);
	for (int i = 0; i < 9; i++) {
		const char *addr = i < 7 ? "192.0.2.7" : "192.0.2.8";
		struct rl_request req = {
			.method = "POST", .path = "/login", .path_len = 6,
			.remote_addr = addr, .remote_addr_len = strlen(addr),
		};
		enum rl_outcome o = rl_decide(rs, &st, &req, T0, RL_HIT, &d);
		cr_assert_eq(o, i == 5 || i == 6 ? RL_DENY : RL_ALLOW,
			     "request %d", i);
	}
	st.ops->destroy(st.impl);
	rl_ruleset_free(rs);
}

Test(inspect, top_keys)
{
	fill();
	cr_assert_eq(run_inspect("-c", rules_path, "--top", "3", "--now", "1700000001000",
			 NULL), 0, "%s", err_text);
	cr_expect_str_eq(out_text,
		"# most hits (hits, denied, remaining/limit, expires in, key)\n"
		"5\t0\t95/100\t3599s\trg:a:addr=192.0.2.7:100/3600000/fw\n"
		"5\t2\t0/5\t59s\trg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"2\t0\t98/100\t3599s\trg:a:addr=192.0.2.8:100/3600000/fw\n"
		"# most denials (hits, denied, remaining/limit, expires in, key)\n"
		"5\t2\t0/5\t59s\trg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"# nearest their limit (hits, denied, remaining/limit, expires in, key)\n"
		"5\t2\t0/5\t59s\trg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"2\t0\t3/5\t59s\trg:r/login:addr=192.0.2.8:5/60000/fw\n"
		"5\t0\t95/100\t3599s\trg:a:addr=192.0.2.7:100/3600000/fw\n");
	cr_expect_str_eq(err_text, "");
	/* a minute later the login windows have expired */
	cr_assert_eq(run_inspect("--store", store_path, "--top", "1", "--now",
			 "1700000060000", NULL), 0);
	cr_expect_str_eq(out_text,
		"# most hits (hits, denied, remaining/limit, expires in, key)\n"
		"5\t0\t95/100\t3540s\trg:a:addr=192.0.2.7:100/3600000/fw\n"
		"# most denials (hits, denied, remaining/limit, expires in, key)\n"
		"5\t2\t0/5\texpired\trg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"# nearest their limit (hits, denied, remaining/limit, expires in, key)\n"
		"5\t0\t95/100\t3540s\trg:a:addr=192.0.2.7:100/3600000/fw\n");
}

Test(inspect, client_and_reset)
{
	struct rl_store st;
	struct shm_config c = { .path = store_path, .size = 1 << 20,
				.names = 1 };
	struct rl_store_op op = { "rg:r/login:addr=192.0.2.7:5/60000/fw", 36,
				  { RL_FIXED_WINDOW, 5, 60000, 0, 1 },
				  { 0, 0, 0, 0, 0 }, 0 };
	struct rl_diag e;
	char err[512];

	fill();
	/* a neighbour whose address starts with the banned one's */
	struct rl_store_op op70 = { "rg:r/login:addr=192.0.2.70:5/60000/fw", 37,
				    { RL_FIXED_WINDOW, 5, 60000, 0, 1 },
				    { 0, 0, 0, 0, 0 }, 0 };
	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.ops->apply(st.impl, &op70, 1, RL_HIT, T0, &e), 0);
	st.ops->destroy(st.impl);
	cr_assert_eq(run_inspect("--store", store_path, "--client", "login:addr=192.0.2.7:",
			 "--now", "1700000001000", NULL), 0);
	cr_expect_str_eq(out_text,
		"key: rg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"  fixed-window, count 5, remaining 0, limiting (denied at its last hit)\n"
		"  hits 5, denied 2, expires in 59s\n"
		"  state: 1700000000000 5 0\n");
	/* an address matches whole fields only: 192.0.2.70 stays */
	cr_assert_eq(run_inspect("--store", store_path, "--reset", "192.0.2.7", NULL), 0);
	cr_expect_str_eq(out_text,
		"reset: rg:a:addr=192.0.2.7:100/3600000/fw\n"
		"reset: rg:r/login:addr=192.0.2.7:5/60000/fw\n"
		"reset 2 keys containing \"192.0.2.7\"\n");
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.70",
			 "--now", "1700000001000", NULL), 0);
	cr_expect(strstr(out_text, "key: rg:r/login:addr=192.0.2.70:5/60000/fw\n  fixed-window, count 5, remaining 4") == out_text,
		  "%s", out_text);
	/* the ban is lifted; the other client is untouched */
	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.ops->apply(st.impl, &op, 1, RL_TEST, T0 + 1000, &e), 0);
	cr_expect_eq(op.v.remaining, 5);
	st.ops->destroy(st.impl);
	cr_assert_eq(run_inspect("--store", store_path, "--reset", "192.0.2.7", NULL), 1);
	cr_expect_str_eq(out_text, "reset 0 keys containing \"192.0.2.7\"\n");
	cr_expect_str_eq(err_text, "rategate inspect: no key contains \"192.0.2.7\"\n");
	cr_assert_eq(run_inspect("--store", store_path, "--stats", NULL), 0);
	cr_expect(strstr(out_text, "\nkeys: 3 of ") != NULL, "%s", out_text);
	cr_expect(strstr(out_text, "\nkeys reset: 2\n") != NULL, "%s", out_text);
}

/* Keys longer than a name record (112 bytes): a long path and a long
 * API key.  They are still found, and reset, by their parts as the log
 * writes them (found by a review: the address or the hashed key was cut
 * off, and --reset left the ban). */
Test(inspect, long_keys_found_by_their_parts)
{
	struct rl_store st;
	struct shm_config c = { .path = store_path, .size = 1 << 20,
				.names = 1 };
	char path[121], api[101], k1[400], k2[400], want[600], hashed[64];
	struct rl_diag e;
	char err[512];

	memset(path, 'p', 120);
	path[120] = '\0';
	memset(api, 'k', 100);
	api[100] = '\0';
	snprintf(k1, sizeof(k1), "rg:r/%s:h.x-api-key=%s+addr=192.0.2.7:2/60000/fw", path, api);
	snprintf(k2, sizeof(k2), "rg:r/%s:addr=192.0.2.9:2/60000/fw", path);
	struct rl_store_op ops[2] = {
		{ k1, strlen(k1), { RL_FIXED_WINDOW, 2, 60000, 0, 1 }, { 0, 0, 0, 0, 0 }, 0 },
		{ k2, strlen(k2), { RL_FIXED_WINDOW, 2, 60000, 0, 1 }, { 0, 0, 0, 0, 0 }, 0 },
	};
	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 2; j++)
			cr_assert_eq(st.ops->apply(st.impl, &ops[j], 1, RL_HIT, T0, &e), 0);
	cr_expect_eq(ops[0].v.allowed, 0);
	st.ops->destroy(st.impl);

	snprintf(hashed, sizeof(hashed), "h.x-api-key=#%016llx",
		 (unsigned long long)rl_fnv1a(api, 100));
	/* the names: the long value as the log writes it, the path's middle
	 * left out, the client's parts and the limit whole (112 bytes) */
	cr_assert_eq(run_inspect("--store", store_path, "--top", "2", "--now",
			 "1700000001000", NULL), 0, "%s", err_text);
	snprintf(want, sizeof(want), "rg:r/%.*s...%.*s:%s+addr=192.0.2.7:2/60000/fw\n",
		 23, path, 25, path, hashed);
	cr_expect(strstr(out_text, want) != NULL, "%s\nin\n%s", want, out_text);
	snprintf(want, sizeof(want), "rg:r/%.*s...%.*s:addr=192.0.2.9:2/60000/fw\n",
		 38, path, 40, path);
	cr_expect(strstr(out_text, want) != NULL, "%s\nin\n%s", want, out_text);
	/* found by the address, by the log's hashed key, by the raw key */
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.9",
			 "--now", "1700000001000", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "addr=192.0.2.9:2/60000/fw\n  fixed-window, count 2, remaining 0, limiting") != NULL, "%s", out_text);
	/* later: said once, not "expires in expired" */
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.9",
			 "--now", "1800000000000", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "\n  hits 2, denied 1, expired\n") != NULL, "%s", out_text);
	snprintf(want, sizeof(want), "h.x-api-key=%s", api);
	cr_assert_eq(run_inspect("--store", store_path, "--client", want, NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "+addr=192.0.2.7:2/60000/fw\n") != NULL, "%s", out_text);
	cr_assert_eq(run_inspect("--store", store_path, "--reset", hashed, NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "\nreset 1 key") != NULL, "%s", out_text);
	cr_assert_eq(run_inspect("--store", store_path, "--reset", "addr=192.0.2.9", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "\nreset 1 key") != NULL, "%s", out_text);
	/* both bans lifted */
	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	for (int j = 0; j < 2; j++) {
		cr_assert_eq(st.ops->apply(st.impl, &ops[j], 1, RL_TEST, T0 + 1000, &e), 0);
		cr_expect_eq(ops[j].v.remaining, 2, "key %d", j);
	}
	st.ops->destroy(st.impl);
}

/* The name's "..." is never put in the limit (the last field) or the
 * prefix: a key with nothing else to shorten is cut at its end instead. */
Test(inspect, compaction_keeps_the_limit_whole)
{
	char key[256], out[112], k60[61];
	int cut;

	memset(k60, 'k', 60);
	k60[60] = '\0';
	snprintf(key, sizeof(key), "rg:r/a:v.REMOTE_USER=%s+addr=192.0.2.7:bw/1000000000k/3153600000000/sw", k60);
	size_t n = rl_key_name_compact(key, strlen(key), out, sizeof(out), &cut);
	cr_expect_eq(cut, 1);
	cr_expect_eq(n, 112);
	cr_expect(memcmp(out, key, 112) == 0);
	cr_expect_null(memmem(out, n, "...", 3), "a \"...\" in the limit or prefix");
}

/* An in-flight key: its leases while they last, none once all expired
 * (it said "leases held" after a holder's kill -9 and the lease's end;
 * found by a review). */
Test(inspect, inflight_leases_lapse)
{
	struct rl_store st;
	struct shm_config c = { .path = store_path, .size = 1 << 20,
				.names = 1 };
	const char *key = "rg:r/chat:addr=192.0.2.7:inflight/2";
	uint64_t id, held;
	struct rl_diag e;
	char err[512];

	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 2, 5000, T0,
				     &id, &held, &e), 1);
	cr_expect_eq(held, 1);
	st.ops->destroy(st.impl);
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.7",
			 "--now", "1700000001000", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "  in-flight, maximum 2, remaining 1, leases held\n") != NULL,
		  "%s", out_text);
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.7",
			 "--now", "1700000006000", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "  in-flight, maximum 2, remaining 2, no lease held (all expired)\n") != NULL,
		  "%s", out_text);
}

Test(inspect, stats)
{
	char want[2048];
	const char *body;

	fill();
	cr_assert_eq(run_inspect("--store", store_path, "--stats", NULL), 0);
	body = strstr(out_text, "\nsize:");
	cr_assert_not_null(body, "%s", out_text);
	snprintf(want, sizeof(want), "file: %s\ncreated: ", store_path);
	cr_expect_eq(strncmp(out_text, want, strlen(want)), 0, "%s", out_text);
	cr_expect_str_eq(body + 1,
		"size: 1048576 bytes, layout version 2, 2 stripes\n"
		"keys: 4 of 5136 slots; 64 bytes per key, +128 for its name\n"
		"moving-window slots: 0 of 2 (64 bytes, counts up to 6)\n"
		"in-flight slots: 0 of 18 (1088 bytes, up to 67 leases)\n"
		"hits: 14 allowed, 2 denied\n"
		"keys created: 4\n"
		"evicted: 0 expired, 0 least recently used, 0 limiting (bans lifted early)\n"
		"store full: 0\n"
		"lock recoveries and repairs: 0\n"
		"keys reset: 0\n");
}

Test(inspect, errors)
{
	struct rl_store st;
	struct shm_config c = { .path = store_path, .size = 1 << 20 };
	char err[512], want[512];
	FILE *f;

	cr_expect_eq(run_inspect("--top", "3", NULL), 2);
	cr_expect_str_eq(err_text,
		"rategate inspect: give -c RULES or --store FILE\n"
		"usage: rategate inspect (-c RULES | --store FILE) [--stats] [--top N]\n"
		"                        [--client TEXT] [--reset TEXT] [--now MS]\n");
	cr_expect_eq(run_inspect("--store", store_path, "--top", "0", NULL), 2);
	cr_expect_str_eq(err_text, "rategate inspect: bad --top \"0\": expected 1 to 1000\n");
	cr_expect_eq(run_inspect("--store", store_path, "--reset", "", NULL), 2);
	cr_expect_str_eq(err_text, "rategate inspect: --client and --reset need a non-empty TEXT\n");
	cr_expect_eq(run_inspect("--store", store_path, "--bogus", NULL), 2);
	cr_expect_eq(run_inspect("--store", store_path, NULL), 1);
	snprintf(want, sizeof(want), "rategate inspect: shm store \"%s\": no such file (no gateway has created it yet)\n",
		 store_path);
	cr_expect_str_eq(err_text, want);
	cr_expect_eq(access(store_path, F_OK), -1, "inspect created the store");
	/* a store without names cannot match text */
	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	st.ops->destroy(st.impl);
	cr_expect_eq(run_inspect("--store", store_path, "--client", "x", NULL), 1);
	snprintf(want, sizeof(want), "rategate inspect: %s keeps no key names: --client and --reset cannot match\n",
		 store_path);
	cr_expect_str_eq(err_text, want);
	/* rules whose storage is not shared memory */
	f = fopen(rules_path, "w");
	cr_assert_not_null(f);
	fputs("storage memory\n/a 1/second\n", f);
	fclose(f);
	cr_expect_eq(run_inspect("-c", rules_path, NULL), 1);
	snprintf(want, sizeof(want), "rategate inspect: %s: storage memory is not shared memory: nothing to inspect\n",
		 rules_path);
	cr_expect_str_eq(err_text, want);
}

/* --reset of an in-flight key forgets its leases: the client takes its N
 * slots afresh while the requests that held them still run, and their
 * release later finds nothing of theirs (README: inspect). */
Test(inspect, reset_inflight_forgets_leases)
{
	struct rl_store st;
	struct shm_config c = { .path = store_path, .size = 1 << 20,
				.names = 1 };
	const char *key = "rg:r/chat:addr=192.0.2.7:inflight/2";
	uint64_t id1, id2, id3, held;
	struct rl_diag e;
	char err[512];

	cr_assert_eq(shm_store_open(&c, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 2, 60000, T0,
				     &id1, &held, &e), 1);
	cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 2, 60000, T0,
				     &id2, &held, &e), 1);
	cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 2, 60000, T0,
				     &id3, &held, &e), 0);
	cr_assert_eq(run_inspect("--store", store_path, "--reset", "192.0.2.7",
			 "--now", "1700000001000", NULL), 0, "%s", err_text);
	cr_expect_str_eq(out_text, "reset: rg:r/chat:addr=192.0.2.7:inflight/2\n"
			 "reset 1 key containing \"192.0.2.7\"\n");
	cr_assert_eq(st.ops->acquire(st.impl, key, strlen(key), 2, 60000, T0 + 2000,
				     &id3, &held, &e), 1);
	cr_expect_eq(held, 1);
	/* an old holder's release leaves the new lease alone */
	cr_assert_eq(st.ops->release(st.impl, key, strlen(key), id1, T0 + 3000, &e), 0);
	cr_assert_eq(run_inspect("--store", store_path, "--client", "192.0.2.7",
			 "--now", "1700000004000", NULL), 0, "%s", err_text);
	cr_expect(strstr(out_text, "  in-flight, maximum 2, remaining 1, leases held\n") != NULL,
		  "%s", out_text);
	st.ops->destroy(st.impl);
}
