/*
 * fuzz_replay.c - libFuzzer target for replay_parse_line (gateway/replay.c),
 * the reader of `rategate replay`'s input: a plain trace line or an
 * Apache/nginx combined or common access-log line.  The input up to its
 * first '\n' is one line, in a buffer of its exact size so ASan sees any
 * read past its length.  Checks: the answer is -1, 0, 1 or 2; a refusal says
 * why; a parsed line has a method, a non-empty target path (the engine
 * judges it), a non-negative time, and every text field NUL-terminated inside its array.
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
	}
	free(line);
	return 0;
}
