/*
 * util.c - small helpers that the library's modules and the gateway share,
 * so each exists once: trimming, an unkeyed string hash, a bit mixer, and
 * SipHash (Aumasson and Bernstein), the keyed hash of the stores.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "rules.h"

#include <string.h>

void
rl_trim(const char **s, size_t *len)
{
	while (*len > 0 && (**s == ' ' || **s == '\t')) {
		(*s)++;
		(*len)--;
	}
	while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
		(*len)--;
}

int
rl_hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

uint64_t
rl_fnv1a(const char *s, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

void
rl_hash_text(const char *s, size_t len, char out[17])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t h = rl_fnv1a(s, len);

	out[0] = '#';
	for (int i = 0; i < 16; i++)
		out[1 + i] = hex[(h >> (60 - 4 * i)) & 15];
}

uint64_t
rl_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* ------------------------------------------------------------------ */
/* SipHash                                                             */

/* One load, byte-swapped on a big-endian host (SipHash reads its input
 * and key as little-endian words). */
static uint64_t
le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

struct rl_sipkey
rl_sipkey_of(const uint8_t key[16])
{
	struct rl_sipkey k = { le64(key), le64(key + 8) };

	return k;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                         \
	do {                                                             \
		v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
		v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                    \
		v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                    \
		v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
	} while (0)

/* SipHash-c-d with a 64-bit (out[1] NULL) or a 128-bit output; inlined
 * into each caller below, so the round counts are constants there. */
static inline __attribute__((always_inline)) uint64_t
siphash(int c, int d, const struct rl_sipkey *k, const void *data,
	size_t len, uint64_t *hi)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ k->k0;
	uint64_t v1 = 0x646f72616e646f6dULL ^ k->k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k->k0;
	uint64_t v3 = 0x7465646279746573ULL ^ k->k1;
	const uint8_t *p = data;
	size_t left = len & 7;
	uint64_t b = (uint64_t)len << 56, lo;

	if (hi)
		v1 ^= 0xee;
	for (const uint8_t *end = p + (len - left); p != end; p += 8) {
		uint64_t mi = le64(p);
		v3 ^= mi;
		for (int i = 0; i < c; i++)
			SIPROUND;
		v0 ^= mi;
	}
	/* The last 0-7 bytes gathered in a register: copying them into a
	 * zeroed buffer and loading that as a word stalls the CPU until the
	 * byte stores are done (~4 ns of a ~17 ns hash). */
	switch (left) {
	case 7: b |= (uint64_t)p[6] << 48; /* FALLTHROUGH */
	case 6: b |= (uint64_t)p[5] << 40; /* FALLTHROUGH */
	case 5: b |= (uint64_t)p[4] << 32; /* FALLTHROUGH */
	case 4: b |= (uint64_t)p[3] << 24; /* FALLTHROUGH */
	case 3: b |= (uint64_t)p[2] << 16; /* FALLTHROUGH */
	case 2: b |= (uint64_t)p[1] << 8;  /* FALLTHROUGH */
	case 1: b |= (uint64_t)p[0];       break;
	}
	v3 ^= b;
	for (int i = 0; i < c; i++)
		SIPROUND;
	v0 ^= b;
	v2 ^= hi ? 0xee : 0xff;
	for (int i = 0; i < d; i++)
		SIPROUND;
	lo = v0 ^ v1 ^ v2 ^ v3;
	if (hi) {
		v1 ^= 0xdd;
		for (int i = 0; i < d; i++)
			SIPROUND;
		*hi = v0 ^ v1 ^ v2 ^ v3;
	}
	return lo;
}

uint64_t
rl_siphash24(const struct rl_sipkey *k, const void *data, size_t len)
{
	return siphash(2, 4, k, data, len, NULL);
}

void
rl_siphash24_128(const struct rl_sipkey *k, const void *data, size_t len,
		 uint64_t out[2])
{
	out[0] = siphash(2, 4, k, data, len, &out[1]);
}

void
rl_siphash13_128(const struct rl_sipkey *k, const void *data, size_t len,
		 uint64_t out[2])
{
	out[0] = siphash(1, 3, k, data, len, &out[1]);
}
