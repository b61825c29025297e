/*
 * store_memory.c - a process-local store (rules/memstore.c) under a random
 * hash secret: apart from store.c so that the replay fuzzer, which links
 * replay.c without the shared-memory and Redis stores, links it too.
 */
#include "config.h"

#include <stdio.h>
#include <sys/random.h>

#include "store.h"

int
store_memory_new(size_t max_keys, struct rl_store *st, char *err,
		 size_t errcap)
{
	uint8_t secret[16];

	if (getrandom(secret, sizeof(secret), 0) != (ssize_t)sizeof(secret)) {
		snprintf(err, errcap, "no random bytes for the process-local store's hash secret (getrandom)");
		return -1;
	}
	if (memstore_new(max_keys, st) != 0) {
		snprintf(err, errcap, "out of memory for the process-local store");
		return -1;
	}
	memstore_secret(st, secret);
	return 0;
}
