/*
 * store.h - open the counter store a rule set names (`storage`): the
 * process-local store, shared memory (gateway/store_shm.c) or Redis
 * (gateway/store_redis.c).  Every gateway mode gets its rl_store from here.
 */
#ifndef GATEWAY_STORE_H
#define GATEWAY_STORE_H

#include <stddef.h>

#include "rules.h"

struct log;

/* Open the store of rs's settings, sized for its largest moving-window
 * count and concurrency=; a store that logs (Redis: down and up) writes to
 * log (NULL: standard error), which must outlive it.  Returns 0 and fills
 * *st (close it with st->ops->destroy(st->impl)), or -1 with a message in
 * err.  rs may go after. */
int store_open(const struct rl_ruleset *rs, struct log *log,
	       struct rl_store *st, char *err, size_t errcap);

/* A process-local store of max_keys keys under a random hash secret
 * (memstore_secret), exact (no eviction: the caller may ask for it).
 * Returns 0, or -1 with a message in err. */
int store_memory_new(size_t max_keys, struct rl_store *st, char *err,
		     size_t errcap);

#endif
