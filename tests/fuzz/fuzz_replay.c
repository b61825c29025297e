/*
 * fuzz_replay.c - libFuzzer target for replay_parse_line (gateway/replay.c),
 * the reader of `rategate replay`'s input: a plain trace line or an
 * Apache/nginx combined or common access-log line.  The input up to its
 * first '\n' is one line, in a buffer of its exact size so ASan sees any
 * read past its length.  Checks: the answer is -1, 0, 1 or 2; a refusal says
 * why; a parsed line has a method, a non-empty target path (the engine
 * judges it), a non-negative time, a status of 0 or 100..599, and every
 * text field NUL-terminated inside its array.  Then the whole input goes
 * through replay_run, as a log of many lines, on rules with every option
 * replay treats apart (deduct-when=, concurrency=, bandwidth=, stats, a
 * missing key, dry-run), with --summary or --verbose by its first byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t len = nl ? (size_t)(nl - data) : size;
	char *line = malloc(len ? len : 1);
	struct replay_line out;
	char err[256] = "";

	memcpy(line, data, len);
	int r = replay_parse_line(line, len, &out, err, sizeof err);
	if (r < -1 || r > 2)
		abort();
	if (r == -1 && err[0] == '\0')
		abort();
	if (r == 1) {
		if (strnlen(out.addr, sizeof out.addr) == sizeof out.addr ||
		    strnlen(out.method, sizeof out.method) == sizeof out.method ||
		    strnlen(out.path, sizeof out.path) == sizeof out.path ||
		    strnlen(out.query, sizeof out.query) == sizeof out.query)
			abort();
		if (out.method[0] == '\0' || out.path[0] == '\0' || out.t_ms < 0)
			abort();
		if (out.status != 0 && (out.status < 100 || out.status > 599))
			abort();
	}
	free(line);

	static struct rl_ruleset *rs;
	static FILE *sink;
	if (rs == NULL) {
		static const char rules[] =
			"stats /status\n"
			"default 3/minute\n"
			"application 20/minute\n"
			"/login 2/minute methods=POST deduct-when=401,403,5xx\n"
			"/up 2/minute bandwidth=1MB/minute concurrency=1\n"
			"/k 2/minute key=header:X-Key missing-key=deny\n"
			"/d 1/minute dry-run\n"
			"/m/** 3/minute strategy=moving-window per-method\n";
		struct rl_report rep;
		rs = rl_ruleset_parse("f.rules", rules, sizeof(rules) - 1, NULL, &rep);
		rl_report_free(&rep);
		sink = fopen("/dev/null", "w");
		if (rs == NULL || sink == NULL)
			abort();
		replay_max_keys = 64;   /* eviction too */
	}
	if (size > 0) {
		FILE *in = fmemopen((void *)data, size, "r");
		if (in == NULL)
			abort();
		int r2 = replay_run(rs, in, "f", data[0] & 1 ? REPLAY_SUMMARY :
				    REPLAY_VERBOSE, sink, sink);
		if (r2 != 0 && r2 != 1)
			abort();
		fclose(in);
	}
	return 0;
}
