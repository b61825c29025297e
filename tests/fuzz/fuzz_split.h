/*
 * fuzz_split.h - for the libFuzzer targets: data[start..size) split at
 * '\n' into at most max parts, each copied into a malloc'ed buffer of its
 * exact size (one byte for an empty part), not NUL-terminated, so that
 * ASan reports any read past a part's length.  The caller frees parts[i].
 */
#ifndef TESTS_FUZZ_SPLIT_H
#define TESTS_FUZZ_SPLIT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Returns the number of parts (at least 1 when start <= size). */
static inline size_t
fuzz_split(const uint8_t *data, size_t size, size_t start, char **parts,
	   size_t *lens, size_t max)
{
	size_t n = 0;

	for (size_t i = start; i <= size && n < max; i++) {
		if (i < size && data[i] != '\n')
			continue;
		lens[n] = i - start;
		parts[n] = malloc(lens[n] ? lens[n] : 1);
		if (parts[n] == NULL)
			abort();
		memcpy(parts[n], data + start, lens[n]);
		n++;
		start = i + 1;
	}
	return n;
}

#endif
