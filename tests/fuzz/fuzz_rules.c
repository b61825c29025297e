/*
 * fuzz_rules.c - libFuzzer target for the rule-file parser: arbitrary bytes
 * as a rule file, with includes served from a tiny in-memory file system
 * (including a file that includes itself).  A loaded ruleset must then
 * decide a request without trouble.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

static const uint8_t *cur;
static size_t curlen;

static int
fz_read(void *ctx, const char *path, char **data, size_t *len, char *msg,
	size_t cap)
{
	(void)ctx;
	if (strcmp(path, "self.rules") == 0 || strcmp(path, "a.rules") == 0) {
		*data = malloc(curlen + 1);
		if (*data == NULL)
			return -1;
		memcpy(*data, cur, curlen);
		*len = curlen;
		return 0;
	}
	snprintf(msg, cap, "No such file or directory");
	return -1;
}

static int
fz_glob(void *ctx, const char *pattern, char ***paths, size_t *n, char *msg,
	size_t cap)
{
	(void)ctx;
	(void)msg;
	(void)cap;
	*paths = malloc(sizeof(**paths));
	if (*paths == NULL)
		return -1;
	(*paths)[0] = strdup(strpbrk(pattern, "*?[") ? "a.rules" : pattern);
	*n = 1;
	return 0;
}

static const struct rl_io io = { NULL, fz_read, fz_glob, NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rl_report rep;
	struct rl_ruleset *rs;

	cur = data;
	curlen = size;
	rs = rl_ruleset_load("self.rules", &io, &rep);
	if ((rs == NULL) != (rep.nerrors > 0))
		abort();
	if (rs != NULL) {
		struct rl_store st;
		struct rl_decision d;
		struct rl_param p = { "HTTP_X_FORWARDED_FOR", 20, "1.2.3.4, ::1", 12 };
		struct rl_request req = {
			.method = "POST", .path = "/login", .path_len = 6,
			.remote_addr = "192.0.2.1", .remote_addr_len = 9,
			.params = &p, .nparams = 1,
		};
		if (memstore_new(64, &st) == 0) {
			rl_decide(rs, &st, &req, 1700000000000LL, RL_HIT, &d);
			rl_decide(rs, &st, &req, 1700000000000LL, RL_TEST, &d);
			st.ops->destroy(st.impl);
		}
	}
	rl_report_free(&rep);
	rl_ruleset_free(rs);
	return 0;
}
