/*
 * inspect_run.h - `rategate inspect` for the unit tests (test_inspect.c
 * on shared memory, test_store_redis.c on Redis): run it with the given
 * arguments and keep what it printed.
 *
 * Ownership: out_text and err_text are the last run's output and errors
 * (open_memstream buffers); the next run frees them, and so should the
 * test's teardown (inspect_free).
 */
#ifndef TESTS_UNIT_INSPECT_RUN_H
#define TESTS_UNIT_INSPECT_RUN_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "inspect.h"

static char *out_text, *err_text;

/* Runs inspect with the arguments (NULL-terminated); its output and
 * errors land in out_text and err_text. */
static inline int run_inspect(const char *a0, ...)
{
	char *argv[16];
	int argc = 0, rc;
	size_t ol, el;
	FILE *out, *err;
	va_list ap;

	argv[argc++] = (char *)"inspect";
	va_start(ap, a0);
	for (const char *a = a0; a && argc < 15; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	free(out_text);
	free(err_text);
	out = open_memstream(&out_text, &ol);
	err = open_memstream(&err_text, &el);
	rc = inspect_run(argc, argv, out, err);
	fclose(out);
	fclose(err);
	return rc;
}

static inline void inspect_free(void)
{
	free(out_text);
	free(err_text);
	out_text = err_text = NULL;
}

#endif
