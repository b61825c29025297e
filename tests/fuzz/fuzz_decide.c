/*
 * fuzz_decide.c - libFuzzer target for rl_decide as a gateway calls it:
 * arbitrary requests (method, raw target with a query string, REMOTE_ADDR,
 * CGI parameters: headers, cookies, X-Forwarded-For, Forwarded,
 * REMOTE_USER) through two rule sets that use every kind of key, trusted
 * proxies by count and by network, both proxy headers, per-method and
 * case-insensitive matching, bandwidth, concurrency and deduct-when, on a
 * process-local store, with rl_after_response after an allowed request.
 *
 * Input: the first byte picks the rule set (bit 0), the cost (bits 1-2:
 * the rule's, 1, 2 or 3), the response status given to rl_after_response
 * (bit 3: 401 or 200) and a body size (bits 4-5: none, 100 bytes, 1 MiB,
 * 3 MiB); the rest is split at '\n' into the method, the target, REMOTE_ADDR
 * and up to 12 parameters "NAME=value", each in a buffer of its exact size
 * so ASan sees any read past a length.  Checks: the outcome is one of
 * rl_outcome's; the client key and address shown in d are printable ASCII
 * without spaces, and the key has no ':' (client data is escaped, so it
 * cannot imitate the separators of a store key); a denial has a
 * retry_ms >= 1; and two RL_TEST decisions of the same request at the
 * same time agree (a test counts nothing).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_split.h"
#include "rules.h"

#define MAX_PARTS 15

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char rules_a[] =
	"trusted-proxies  2\n"
	"ipv6-prefix      48\n"
	"default          100/minute\n"
	"application      1000/hour\n"
	"/api/**          10/minute  key=header:X-Api-Key|cookie:sid|addr\n"
	"/q/*             5/minute   key=query:api_key+addr  scope=qq\n"
	"/u               5/minute   key=var:REMOTE_USER  missing-key=deny\n"
	"/m               5/minute   methods=GET,POST  per-method\n"
	"/x               exempt\n"
	"/b               5/minute   bandwidth=1MB/minute  max-body=2MB\n"
	"/c               concurrency=2\n"
	"/g/**            3/minute   strategy=gcra  burst=2  cost=2\n"
	"/s/*/t           4/minute   strategy=moving-window\n"
	"/login           3/minute   deduct-when=401\n";

static const char rules_b[] =
	"trusted-proxies  10.0.0.0/8 2001:db8::/32\n"
	"proxy-header     Forwarded\n"
	"case-insensitive on\n"
	"ipv4-prefix      24\n"
	"exempt-clients   192.0.2.0/28 2001:db8:1::/48 ::ffff:198.51.100.7\n"
	"strategy         sliding-window-counter\n"
	"default          2/second; 100/hour\n"
	"/Login           5/minute   methods=POST  scope=auth  key=header:X-User+addr\n"
	"/api/**          10/minute  key=cookie:session|query:key  missing-key=deny  defaults=add\n";

static struct rl_ruleset *rs[2];
static struct rl_store st;
static int64_t now = 1700000000000LL;
static unsigned runs;

static void
setup(void)
{
	const char *text[2] = { rules_a, rules_b };
	struct rl_report rep;

	for (int i = 0; i < 2; i++) {
		rs[i] = rl_ruleset_parse("fuzz.rules", text[i], strlen(text[i]),
					 NULL, &rep);
		if (rs[i] == NULL)
			abort();
		rl_report_free(&rep);
	}
}

/* Printable ASCII without spaces, NUL-terminated within cap. */
static void
check_text(const char *s, size_t cap, int colon_ok)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		abort();
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= 0x20 || c >= 0x7f || (c == ':' && !colon_ok))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *parts[MAX_PARTS];
	size_t lens[MAX_PARTS], nparts;
	struct rl_param params[MAX_PARTS];
	struct rl_decision d, t1, t2;
	static const uint64_t bodies[4] = { 0, 100, 1u << 20, 3u << 20 };

	if (size == 0)
		return 0;
	if (rs[0] == NULL)
		setup();
	if (runs++ % 5000 == 0) {       /* a fresh store now and then */
		if (st.ops != NULL)
			st.ops->destroy(st.impl);
		if (memstore_new(4096, &st) != 0)
			abort();
	}
	nparts = fuzz_split(data, size, 1, parts, lens, MAX_PARTS);
	/* method, target, REMOTE_ADDR, then NAME=value */
	size_t np = 0;
	for (size_t i = 3; i < nparts; i++) {
		const char *eq = memchr(parts[i], '=', lens[i]);
		size_t nl = eq ? (size_t)(eq - parts[i]) : lens[i];
		params[np].name = parts[i];
		params[np].name_len = nl;
		params[np].value = eq ? eq + 1 : parts[i] + lens[i];
		params[np].value_len = eq ? lens[i] - nl - 1 : 0;
		np++;
	}
	const char *target = nparts > 1 ? parts[1] : "/";
	size_t tlen = nparts > 1 ? lens[1] : 1;
	const char *q = memchr(target, '?', tlen);
	char method[17];
	size_t ml = nparts > 0 ? (lens[0] < 16 ? lens[0] : 16) : 0;
	memcpy(method, nparts > 0 ? parts[0] : "", ml);
	method[ml] = '\0';      /* CGI gives REQUEST_METHOD as a C string */
	struct rl_request req = {
		.method = ml ? method : NULL,
		.path = target,
		.path_len = q ? (size_t)(q - target) : tlen,
		.query = q ? q + 1 : NULL,
		.query_len = q ? tlen - (size_t)(q - target) - 1 : 0,
		.remote_addr = nparts > 2 ? parts[2] : NULL,
		.remote_addr_len = nparts > 2 ? lens[2] : 0,
		.params = params,
		.nparams = np,
		.cost = (data[0] >> 1) & 3,
		.body_bytes = bodies[(data[0] >> 4) & 3],
	};
	const struct rl_ruleset *r = rs[data[0] & 1];

	now += 7;
	enum rl_outcome o1 = rl_decide(r, &st, &req, now, RL_TEST, &t1);
	enum rl_outcome o2 = rl_decide(r, &st, &req, now, RL_TEST, &t2);
	if (o1 != o2 || strcmp(t1.key, t2.key) != 0 ||
	    strcmp(t1.client, t2.client) != 0)
		abort();
	enum rl_outcome o = rl_decide(r, &st, &req, now, RL_HIT, &d);
	if (o != d.outcome || o > RL_TOO_LARGE)
		abort();
	check_text(d.key, sizeof d.key, 0);
	check_text(d.client, sizeof d.client, 1);
	if (o == RL_DENY && d.retry_ms < 1)
		abort();
	if (o == RL_ALLOW) {
		struct rl_diag err = { 0, "" };
		rl_after_response(r, &st, &req, (data[0] & 8) ? 401 : 200, 0,
				  now + 1, &err);
	}
	for (size_t i = 0; i < nparts; i++)
		free(parts[i]);
	return 0;
}
