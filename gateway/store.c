/*
 * store.c - the storage URI to an rl_store.
 */
#include "config.h"

#include <stdio.h>

#include "store.h"
#include "store_redis.h"
#include "store_shm.h"

/* Keys the process-local store holds at most (85 bytes each when full, a
 * 64-byte slot at a load of 3/4, plus the heap states of moving windows);
 * when it is full a new key evicts an old one (memstore_evict_lru), as the
 * shared-memory store does, so no client can make it refuse everyone. */
#define MEMORY_MAX_KEYS (1u << 20)

int
store_open(const struct rl_ruleset *rs, struct log *log, struct rl_store *st,
	   char *err, size_t errcap)
{
	switch (rl_ruleset_settings(rs)->storage.kind) {
	case RL_STORAGE_MEMORY:
		if (store_memory_new(MEMORY_MAX_KEYS, st, err, errcap) != 0)
			return -1;
		memstore_evict_lru(st);
		return 0;
	case RL_STORAGE_SHM:
		return store_shm_open(rs, st, err, errcap);
	case RL_STORAGE_REDIS:
		return store_redis_open(rs, log, st, err, errcap);
	}
	snprintf(err, errcap, "unknown storage kind");
	return -1;
}
