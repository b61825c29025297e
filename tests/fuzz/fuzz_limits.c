/*
 * fuzz_limits.c - libFuzzer target for rl_limits_parse: any bytes, read
 * only through len.  Checks that an accepted string gives 1..RL_MAX_LIMITS
 * limits within bounds with distinct periods and texts that parse again to
 * the same limit, and that an error has a message and a column inside the
 * input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rl_limit out[RL_MAX_LIMITS], again[RL_MAX_LIMITS];
	struct rl_diag d;
	size_t n, m, i, k;
	/* An exact-size copy so ASan sees any read past len. */
	char *s = malloc(size ? size : 1);

	memcpy(s, data, size);
	memset(&d, 0, sizeof d);
	if (rl_limits_parse(s, size, out, &n, &d) < 0) {
		if (d.msg[0] == '\0' || d.col > size
		    || memchr(d.msg, '\0', sizeof d.msg) == NULL)
			abort();
		free(s);
		return 0;
	}
	if (n < 1 || n > RL_MAX_LIMITS)
		abort();
	for (i = 0; i < n; i++) {
		size_t tl = strlen(out[i].text);

		if (out[i].count < 1 || out[i].count > RL_MAX_COUNT
		    || out[i].period_ms < 1000
		    || out[i].period_ms > RL_MAX_PERIOD_MS
		    || out[i].period_ms % 1000 != 0
		    || tl == 0 || tl >= RL_LIMIT_TEXT_MAX)
			abort();
		for (k = 0; k < i; k++)
			if (out[k].period_ms == out[i].period_ms)
				abort();
		if (rl_limits_parse(out[i].text, tl, again, &m, &d) < 0
		    || m != 1 || again[0].count != out[i].count
		    || again[0].period_ms != out[i].period_ms
		    || strcmp(again[0].text, out[i].text) != 0)
			abort();
	}
	free(s);
	return 0;
}
