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
store_open(const struct rl_settings *s, uint64_t max_moving,
	   uint64_t max_leases, struct log *log, struct rl_store *st, char *err,
	   size_t errcap)
{
	switch (s->storage.kind) {
	case RL_STORAGE_MEMORY:
		if (store_memory_new(MEMORY_MAX_KEYS, st, err, errcap) != 0)
			return -1;
		memstore_evict_lru(st);
		return 0;
	case RL_STORAGE_SHM:
		return store_shm_open(s, max_moving, max_leases, st, err, errcap);
	case RL_STORAGE_REDIS:
		return store_redis_open(s, max_moving, max_leases, log, st, err,
					errcap);
	}
	snprintf(err, errcap, "unknown storage kind");
	return -1;
}
