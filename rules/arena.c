/*
 * arena.c - the bump allocator that owns a ruleset's memory.
 *
 * A ruleset is built once at load and freed as a whole, so every piece of it
 * comes from one arena: no per-object free, no ownership to track.  Blocks
 * are at least 16 KiB; larger requests get a block of their own.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ARENA_BLOCK 16384

struct rl_arena_block {
	struct rl_arena_block *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

void *
rl_arena_alloc(struct rl_arena *a, size_t n)
{
	struct rl_arena_block *b = a->head;

	n = (n + 15) & ~(size_t)15;
	if (n == 0)
		n = 16;
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;

		b = malloc(sizeof(*b) + cap);
		if (b == NULL)
			return NULL;
		b->used = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
		a->bytes += sizeof(*b) + cap;
	}
	void *p = b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

char *
rl_arena_strndup(struct rl_arena *a, const char *s, size_t n)
{
	char *p = rl_arena_alloc(a, n + 1);

	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

void
rl_arena_free(struct rl_arena *a)
{
	struct rl_arena_block *b = a->head;

	while (b != NULL) {
		struct rl_arena_block *next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
	a->bytes = 0;
}
