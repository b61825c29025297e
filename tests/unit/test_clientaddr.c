/*
 * test_clientaddr.c - address and network parsing, formatting with prefix
 * masks, and client resolution from REMOTE_ADDR plus X-Forwarded-For or
 * Forwarded under 0-3 trusted hops or trusted networks: several header
 * values, ports, brackets, IPv6 and v4-mapped, garbage and oversized
 * entries.  Table-driven; a failing case reports its line.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "internal.h"

static const char *fmt(const struct rl_addr *a, char *buf)
{
	rl_addr_format(a, 32, 128, buf, 64);
	return buf;
}

struct addr_case {
	int line;
	const char *s;
	int family;             /* 0: invalid */
	const char *text;
};

static const struct addr_case addrs[] = {
	{ __LINE__, "1.2.3.4", 4, "1.2.3.4" },
	{ __LINE__, " 1.2.3.4\t", 4, "1.2.3.4" },
	{ __LINE__, "1.2.3.4:8080", 4, "1.2.3.4" },
	{ __LINE__, "1.2.3.4:0", 4, "1.2.3.4" },
	{ __LINE__, "1.2.3.4:65535", 4, "1.2.3.4" },
	{ __LINE__, "2001:db8::1", 6, "2001:db8::1" },
	{ __LINE__, "2001:DB8:0:0::1", 6, "2001:db8::1" },
	{ __LINE__, "[2001:db8::1]", 6, "2001:db8::1" },
	{ __LINE__, "[2001:db8::1]:443", 6, "2001:db8::1" },
	{ __LINE__, "::1", 6, "::1" },
	{ __LINE__, "::", 6, "::" },
	{ __LINE__, "::ffff:1.2.3.4", 4, "1.2.3.4" },
	{ __LINE__, "::FFFF:102:304", 4, "1.2.3.4" },
	{ __LINE__, "[::ffff:1.2.3.4]:80", 4, "1.2.3.4" },
	{ __LINE__, "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 6,
	  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
	{ __LINE__, "1.2.3.4:65536", 0, NULL },
	{ __LINE__, "1.2.3.4:", 0, NULL },
	{ __LINE__, "1.2.3.4:123456", 0, NULL },
	{ __LINE__, "1.2.3.4:x", 0, NULL },
	{ __LINE__, "1.2.3.4:-1", 0, NULL },
	{ __LINE__, "[2001:db8::1]443", 0, NULL },
	{ __LINE__, "[2001:db8::1", 0, NULL },
	{ __LINE__, "2001:db8::1]", 0, NULL },
	{ __LINE__, "[2001:db8::1]:", 0, NULL },
	{ __LINE__, "[1.2.3.4]", 0, NULL },
	{ __LINE__, "[1.2.3.4]:80", 0, NULL },
	{ __LINE__, "1.2.3", 0, NULL },
	{ __LINE__, "1.2.3.4.5", 0, NULL },
	{ __LINE__, "256.1.1.1", 0, NULL },
	{ __LINE__, "01.2.3.4", 0, NULL },
	{ __LINE__, "0x1.2.3.4", 0, NULL },
	{ __LINE__, "unknown", 0, NULL },
	{ __LINE__, "example.com", 0, NULL },
	{ __LINE__, "fe80::1%eth0", 0, NULL },
	{ __LINE__, "1.2.3.4 5", 0, NULL },
	{ __LINE__, "1.2.3.4,5.6.7.8", 0, NULL },
	{ __LINE__, "", 0, NULL },
	{ __LINE__, "   ", 0, NULL },
	{ __LINE__, "2001:db8:::1", 0, NULL },
};

Test(clientaddr, parse)
{
	size_t i;

	for (i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
		const struct addr_case *c = &addrs[i];
		struct rl_addr a;
		char buf[64];
		int rc = rl_addr_parse(c->s, strlen(c->s), &a);

		if (c->family == 0) {
			cr_assert_eq(rc, -1, "line %d: \"%s\" accepted",
				     c->line, c->s);
			continue;
		}
		cr_assert_eq(rc, 0, "line %d: \"%s\" refused", c->line, c->s);
		cr_assert_eq(a.family, c->family, "line %d", c->line);
		cr_assert_str_eq(fmt(&a, buf), c->text, "line %d", c->line);
	}
}

Test(clientaddr, parse_is_len_bounded)
{
	struct rl_addr a;
	char buf[64];
	static const char nul[] = "1.2.3.4\0junk";
	char *big = malloc(200);

	cr_assert_eq(rl_addr_parse("1.2.3.45", 7, &a), 0);
	cr_assert_str_eq(fmt(&a, buf), "1.2.3.4");
	cr_assert_eq(rl_addr_parse(nul, sizeof nul - 1, &a), -1);
	cr_assert_eq(rl_addr_parse(nul, 8, &a), -1);
	cr_assert_eq(rl_addr_parse(NULL, 0, &a), -1);
	/* spaces around do not count towards the 64-byte bound */
	memset(big, ' ', 200);
	memcpy(big + 100, "1.2.3.4", 7);
	cr_assert_eq(rl_addr_parse(big, 200, &a), 0);
	/* 65 bytes of entry: refused whatever they hold */
	memset(big, '1', 65);
	cr_assert_eq(rl_addr_parse(big, 65, &a), -1);
	free(big);
}

struct cidr_case {
	int line;
	const char *s;
	int family;             /* 0: invalid */
	const char *net;
	unsigned bits;
};

static const struct cidr_case cidrs[] = {
	{ __LINE__, "10.0.0.0/8", 4, "10.0.0.0", 8 },
	{ __LINE__, "10.1.2.3/8", 4, "10.0.0.0", 8 },
	{ __LINE__, " 192.168.1.7 ", 4, "192.168.1.7", 32 },
	{ __LINE__, "192.168.1.7/31", 4, "192.168.1.6", 31 },
	{ __LINE__, "0.0.0.0/0", 4, "0.0.0.0", 0 },
	{ __LINE__, "2001:db8::/32", 6, "2001:db8::", 32 },
	{ __LINE__, "2001:db8:ffff::1/33", 6, "2001:db8:8000::", 33 },
	{ __LINE__, "2001:db8::1", 6, "2001:db8::1", 128 },
	{ __LINE__, "::/0", 6, "::", 0 },
	{ __LINE__, "::ffff:10.0.0.0/104", 4, "10.0.0.0", 8 },
	{ __LINE__, "::ffff:10.0.0.1", 4, "10.0.0.1", 32 },
	{ __LINE__, "::ffff:10.0.0.0/95", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/33", 0, NULL, 0 },
	{ __LINE__, "2001:db8::/129", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/-1", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/0008", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/8x", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0/8/8", 0, NULL, 0 },
	{ __LINE__, "/8", 0, NULL, 0 },
	{ __LINE__, "10.0.0.0 /8", 0, NULL, 0 },
	{ __LINE__, "[::1]/128", 0, NULL, 0 },
	{ __LINE__, "[::1]", 0, NULL, 0 },
	{ __LINE__, "1.2.3.4:80", 0, NULL, 0 },
	{ __LINE__, "", 0, NULL, 0 },
	{ __LINE__, "example.com/8", 0, NULL, 0 },
};

Test(clientaddr, cidr_parse)
{
	size_t i;

	for (i = 0; i < sizeof cidrs / sizeof cidrs[0]; i++) {
		const struct cidr_case *c = &cidrs[i];
		struct rl_cidr n;
		char buf[64];
		int rc = rl_cidr_parse(c->s, strlen(c->s), &n);

		if (c->family == 0) {
			cr_assert_eq(rc, -1, "line %d: \"%s\" accepted",
				     c->line, c->s);
			continue;
		}
		cr_assert_eq(rc, 0, "line %d: \"%s\" refused", c->line, c->s);
		cr_assert_eq(n.net.family, c->family, "line %d", c->line);
		cr_assert_str_eq(fmt(&n.net, buf), c->net, "line %d", c->line);
		cr_assert_eq(n.bits, c->bits, "line %d: bits %u", c->line,
			     n.bits);
	}
}

struct contains_case {
	int line;
	const char *net;
	const char *addr;
	int in;
};

static const struct contains_case contains[] = {
	{ __LINE__, "10.0.0.0/8", "10.255.1.1", 1 },
	{ __LINE__, "10.0.0.0/8", "10.0.0.0", 1 },
	{ __LINE__, "10.0.0.0/8", "11.0.0.1", 0 },
	{ __LINE__, "10.0.0.0/8", "9.255.255.255", 0 },
	{ __LINE__, "10.0.0.0/8", "::ffff:10.0.0.1", 1 },
	{ __LINE__, "10.0.0.0/8", "::a00:1", 0 },
	{ __LINE__, "192.168.0.0/23", "192.168.1.255", 1 },
	{ __LINE__, "192.168.0.0/23", "192.168.2.0", 0 },
	{ __LINE__, "192.168.1.7", "192.168.1.7", 1 },
	{ __LINE__, "192.168.1.7", "192.168.1.8", 0 },
	{ __LINE__, "0.0.0.0/0", "255.255.255.255", 1 },
	{ __LINE__, "0.0.0.0/0", "::1", 0 },
	{ __LINE__, "2001:db8::/32", "2001:db8:ffff::1", 1 },
	{ __LINE__, "2001:db8::/32", "2001:db9::", 0 },
	{ __LINE__, "2001:db8::/32", "10.0.0.1", 0 },
	{ __LINE__, "2001:db8::/33", "2001:db8:7fff::", 1 },
	{ __LINE__, "2001:db8::/33", "2001:db8:8000::", 0 },
	{ __LINE__, "::/0", "2001:db8::1", 1 },
	{ __LINE__, "::1", "::1", 1 },
	{ __LINE__, "::1", "::2", 0 },
};

Test(clientaddr, cidr_contains)
{
	size_t i;

	for (i = 0; i < sizeof contains / sizeof contains[0]; i++) {
		const struct contains_case *c = &contains[i];
		struct rl_cidr n;
		struct rl_addr a;

		cr_assert_eq(rl_cidr_parse(c->net, strlen(c->net), &n), 0,
			     "line %d", c->line);
		cr_assert_eq(rl_addr_parse(c->addr, strlen(c->addr), &a), 0,
			     "line %d", c->line);
		cr_assert_eq(rl_cidr_contains(&n, &a), c->in, "line %d",
			     c->line);
	}
}

struct format_case {
	int line;
	const char *addr;
	unsigned v4bits, v6bits;
	const char *text;
};

static const struct format_case formats[] = {
	{ __LINE__, "1.2.3.4", 32, 128, "1.2.3.4" },
	{ __LINE__, "1.2.3.4", 24, 128, "1.2.3.0/24" },
	{ __LINE__, "1.2.3.4", 24, 64, "1.2.3.0/24" },
	{ __LINE__, "1.2.3.4", 16, 128, "1.2.0.0/16" },
	{ __LINE__, "1.2.3.255", 31, 128, "1.2.3.254/31" },
	{ __LINE__, "129.2.3.4", 1, 128, "128.0.0.0/1" },
	{ __LINE__, "::ffff:1.2.3.4", 24, 64, "1.2.3.0/24" },
	{ __LINE__, "2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64" },
	{ __LINE__, "2001:db8:1:2:3:4:5:6", 24, 64, "2001:db8:1:2::/64" },
	{ __LINE__, "2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6" },
	{ __LINE__, "2001:db8:1:2:3:4:5:6", 32, 48, "2001:db8:1::/48" },
	{ __LINE__, "2001:db8::1", 32, 127, "2001:db8::/127" },
	{ __LINE__, "2001:db8::3", 32, 127, "2001:db8::2/127" },
	{ __LINE__, "ffff::1", 32, 1, "8000::/1" },
	/* out of range (the loader refuses them): no masking */
	{ __LINE__, "1.2.3.4", 0, 0, "1.2.3.4" },
	{ __LINE__, "1.2.3.4", 33, 129, "1.2.3.4" },
	{ __LINE__, "2001:db8::1", 0, 200, "2001:db8::1" },
};

Test(clientaddr, format)
{
	size_t i;

	for (i = 0; i < sizeof formats / sizeof formats[0]; i++) {
		const struct format_case *c = &formats[i];
		struct rl_addr a;
		char out[64];

		cr_assert_eq(rl_addr_parse(c->addr, strlen(c->addr), &a), 0,
			     "line %d", c->line);
		rl_addr_format(&a, c->v4bits, c->v6bits, out, sizeof out);
		cr_assert_str_eq(out, c->text, "line %d", c->line);
	}
}

Test(clientaddr, format_truncates_to_cap)
{
	struct rl_addr a;
	char out[8];

	cr_assert_eq(rl_addr_parse("192.168.100.200", 15, &a), 0);
	memset(out, 'x', sizeof out);
	rl_addr_format(&a, 32, 128, out, 4);
	cr_assert_str_eq(out, "192");
	cr_assert_eq(out[4], 'x');
}

/* ---------------------------------------------------------------- */

#define MAXV 4

struct client_case {
	int line;
	unsigned hops;
	const char *nets;       /* comma-separated CIDRs, or NULL */
	int forwarded;
	const char *remote;     /* NULL: missing */
	const char *values[MAXV]; /* header values in arrival order */
	enum rl_addr_source src;
	const char *client;     /* NULL for RL_ADDR_NONE */
};

#define R RL_ADDR_REMOTE
#define H RL_ADDR_HEADER
#define S RL_ADDR_SHORT
#define I RL_ADDR_INVALID
#define N RL_ADDR_NONE
#define LAN "10.0.0.0/8,2001:db8::/32"

static const struct client_case clients[] = {
	/* no proxy trusted: REMOTE_ADDR, whatever the header says */
	{ __LINE__, 0, NULL, 0, "10.0.0.1", { "1.1.1.1" }, R, "10.0.0.1" },
	{ __LINE__, 0, NULL, 0, "10.0.0.1:5555", { NULL }, R, "10.0.0.1" },
	{ __LINE__, 0, NULL, 0, "[2001:db8::9]:80", { NULL }, R,
	  "2001:db8::9" },
	/* REMOTE_ADDR missing or invalid */
	{ __LINE__, 0, NULL, 0, NULL, { "1.1.1.1" }, N, NULL },
	{ __LINE__, 1, NULL, 0, "", { "1.1.1.1" }, N, NULL },
	{ __LINE__, 1, NULL, 0, "garbage", { "1.1.1.1" }, N, NULL },
	{ __LINE__, 0, LAN, 0, "unix:", { "1.1.1.1" }, N, NULL },
	/* one trusted hop */
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "1.1.1.1" }, H, "1.1.1.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "9.9.9.9, 1.1.1.1" }, H,
	  "1.1.1.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "9.9.9.9", "1.1.1.1" }, H,
	  "1.1.1.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "1.1.1.1:5678" }, H, "1.1.1.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "[2001:db8::1]:443" }, H,
	  "2001:db8::1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "2001:DB8::1" }, H,
	  "2001:db8::1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "::ffff:1.2.3.4" }, H,
	  "1.2.3.4" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "<script>, 1.1.1.1" }, H,
	  "1.1.1.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { " 1.1.1.1 ,\t" }, H, "1.1.1.1" },
	/* no header at all */
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { NULL }, R, "10.0.0.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "" }, R, "10.0.0.1" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "", " \t", "," }, R,
	  "10.0.0.1" },
	/* two and three trusted hops */
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "9.9.9.9, 1.1.1.1, 10.0.0.2" },
	  H, "1.1.1.1" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1",
	  { "9.9.9.9, 2.2.2.2", "1.1.1.1" }, H, "2.2.2.2" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "2.2.2.2", "", "1.1.1.1" }, H,
	  "2.2.2.2" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "2.2.2.2,,1.1.1.1" }, H,
	  "2.2.2.2" },
	{ __LINE__, 3, NULL, 0, "10.0.0.1",
	  { "5.5.5.5, 1.1.1.1, 10.0.0.3, 10.0.0.2" }, H, "1.1.1.1" },
	{ __LINE__, 3, NULL, 0, "10.0.0.1",
	  { "5.5.5.5", "1.1.1.1", "10.0.0.3", "[2001:db8::2]:1" }, H,
	  "1.1.1.1" },
	/* fewer entries than hops: the leftmost */
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "1.1.1.1" }, S, "1.1.1.1" },
	{ __LINE__, 3, NULL, 0, "10.0.0.1", { "1.1.1.1, 10.0.0.2" }, S,
	  "1.1.1.1" },
	{ __LINE__, 3, NULL, 0, "10.0.0.1", { "1.1.1.1", "10.0.0.2" }, S,
	  "1.1.1.1" },
	/* a trusted hop wrote garbage: the nearest valid entry to its right */
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "garbage" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "unknown" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1", { "1.1.1.1:99999" }, I,
	  "10.0.0.1" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "1.1.1.1, unknown" }, I,
	  "10.0.0.1" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "9.9.9.9, garbage, 1.1.1.1" },
	  I, "1.1.1.1" },
	{ __LINE__, 3, NULL, 0, "10.0.0.1", { "9.9.9.9, x, 2.2.2.2, 1.1.1.1" },
	  I, "2.2.2.2" },
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "1.1.1.1", "2.2.2.2 3.3.3.3" },
	  I, "10.0.0.1" },
	/* beyond the trusted hops nothing is parsed */
	{ __LINE__, 2, NULL, 0, "10.0.0.1", { "garbage, 2.2.2.2, 1.1.1.1" }, H,
	  "2.2.2.2" },
	{ __LINE__, 1, NULL, 0, "10.0.0.1",
	  { "\x01\xff\"'[[[", "1.1.1.1" }, H, "1.1.1.1" },
	/* trusted networks */
	{ __LINE__, 0, LAN, 0, "1.2.3.4", { "5.5.5.5" }, R, "1.2.3.4" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "5.5.5.5" }, H, "5.5.5.5" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { NULL }, R, "10.0.0.1" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "" }, R, "10.0.0.1" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "5.5.5.5, 10.0.0.2" }, H,
	  "5.5.5.5" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1",
	  { "6.6.6.6, 5.5.5.5, 10.0.0.2", "[2001:db8::3]:8080" }, H,
	  "5.5.5.5" },
	{ __LINE__, 0, LAN, 0, "[2001:db8::5]:1",
	  { "3.3.3.3, 2001:db8::9" }, H, "3.3.3.3" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "1.1.1.1, ::ffff:10.0.0.7" }, H,
	  "1.1.1.1" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "10.0.0.5, 10.0.0.2" }, H,
	  "10.0.0.5" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "5.5.5.5, garbage, 10.0.0.2" }, I,
	  "10.0.0.2" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "garbage" }, I, "10.0.0.1" },
	{ __LINE__, 0, LAN, 0, "10.0.0.1", { "garbage, 5.5.5.5" }, H,
	  "5.5.5.5" },
	/* nets rule when hops is set too: hops=5 alone would say SHORT */
	{ __LINE__, 5, LAN, 0, "10.0.0.1", { "1.1.1.1, 2.2.2.2" }, H,
	  "2.2.2.2" },
	{ __LINE__, 1, LAN, 0, "8.8.8.8", { "1.1.1.1" }, R, "8.8.8.8" },
	/* RFC 7239 Forwarded */
	{ __LINE__, 1, NULL, 1, "10.0.0.1",
	  { "for=192.0.2.60;proto=http;by=203.0.113.43" }, H, "192.0.2.60" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1",
	  { "for=\"[2001:db8:cafe::17]:4711\"" }, H, "2001:db8:cafe::17" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "FOR=1.2.3.4" }, H, "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "proto=https; For=\"1.2.3.4\"" },
	  H, "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { " ; for=1.2.3.4 ; " }, H,
	  "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"1.2.3.4:_p1\"" }, H,
	  "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"[::1]:_x\"" }, H, "::1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=1.2.3.4:80" }, H,
	  "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"1.2.\\3.4\"" }, H,
	  "1.2.3.4" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "by=\"a,b\";for=1.2.3.4" }, H,
	  "1.2.3.4" },
	{ __LINE__, 2, NULL, 1, "10.0.0.1",
	  { "for=192.0.2.43, for=198.51.100.17" }, H, "192.0.2.43" },
	{ __LINE__, 2, NULL, 1, "10.0.0.1",
	  { "for=192.0.2.43", "for=198.51.100.17;by=x" }, H, "192.0.2.43" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1",
	  { "for=192.0.2.43, for=\"[2001:db8::1]\"" }, H, "2001:db8::1" },
	{ __LINE__, 3, NULL, 1, "10.0.0.1", { "for=192.0.2.43" }, S,
	  "192.0.2.43" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "" }, R, "10.0.0.1" },
	/* a broken quote on the client's side cannot swallow the proxy's */
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"evil, for=5.6.7.8" }, H,
	  "5.6.7.8" },
	/* invalid Forwarded elements */
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "For=\"_gazonk\"" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=unknown" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=UNKNOWN:80" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "proto=https" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=1.2.3.4;for=5.6.7.8" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"1.2.3.4" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=\"1.2.3.4\"x" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for = 1.2.3.4" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "=1.2.3.4" }, I, "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "for=1.2.3.4;junk" }, I,
	  "10.0.0.1" },
	{ __LINE__, 1, NULL, 1, "10.0.0.1", { "1.2.3.4" }, I, "10.0.0.1" },
	{ __LINE__, 2, NULL, 1, "10.0.0.1",
	  { "for=1.1.1.1, for=_hidden, for=2.2.2.2" }, I, "2.2.2.2" },
	/* Forwarded with trusted networks */
	{ __LINE__, 0, LAN, 1, "10.0.0.1",
	  { "for=5.5.5.5, for=10.0.0.2;proto=https" }, H, "5.5.5.5" },
	{ __LINE__, 0, LAN, 1, "10.0.0.1",
	  { "for=5.5.5.5", "for=\"[2001:db8::2]:99\"" }, H, "5.5.5.5" },
	{ __LINE__, 0, LAN, 1, "10.0.0.1", { "for=5.5.5.5, by=x" }, I,
	  "10.0.0.1" },
};

static void load_nets(const char *spec, struct rl_cidr *nets, size_t *n)
{
	const char *p = spec;

	*n = 0;
	while (spec != NULL && *p != '\0') {
		const char *e = strchr(p, ',');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);

		cr_assert_eq(rl_cidr_parse(p, len, &nets[*n]), 0);
		(*n)++;
		p += len + (e != NULL);
	}
}

Test(clientaddr, client)
{
	size_t i;

	for (i = 0; i < sizeof clients / sizeof clients[0]; i++) {
		const struct client_case *c = &clients[i];
		struct rl_cidr nets[4];
		struct rl_proxy_conf pc = { c->hops, NULL, 0, c->forwarded };
		size_t lens[MAXV], nv = 0;
		struct rl_addr out;
		char buf[64];
		enum rl_addr_source src;

		load_nets(c->nets, nets, &pc.nnets);
		if (pc.nnets > 0)
			pc.nets = nets;
		while (nv < MAXV && c->values[nv] != NULL) {
			lens[nv] = strlen(c->values[nv]);
			nv++;
		}
		src = rl_client_addr(&pc, c->remote,
				     c->remote ? strlen(c->remote) : 0,
				     c->values, lens, nv, &out);
		cr_assert_eq(src, c->src, "line %d: source %d, expected %d",
			     c->line, src, c->src);
		if (c->client != NULL)
			cr_assert_str_eq(fmt(&out, buf), c->client, "line %d",
					 c->line);
	}
}

/* An entry over 64 bytes (after trimming) is garbage. */
Test(clientaddr, oversized_entries)
{
	char big[128];
	const char *values[1] = { big };
	size_t lens[1];
	struct rl_proxy_conf pc = { 2, NULL, 0, 0 };
	struct rl_addr out;
	char buf[64];

	/* "2.2.2.2" inside 120 bytes of spaces is fine: trimmed first */
	memset(big, ' ', sizeof big);
	memcpy(big, "1.1.1.1,", 8);
	memcpy(big + 60, "2.2.2.2", 7);
	lens[0] = sizeof big;
	cr_assert_eq(rl_client_addr(&pc, "10.0.0.1", 8, values, lens, 1, &out),
		     RL_ADDR_HEADER);
	cr_assert_str_eq(fmt(&out, buf), "1.1.1.1");

	/* 65 bytes of entry at hop 1 */
	memset(big, '1', 65);
	lens[0] = 65;
	cr_assert_eq(rl_client_addr(&pc, "10.0.0.1", 8, values, lens, 1, &out),
		     RL_ADDR_INVALID);
	cr_assert_str_eq(fmt(&out, buf), "10.0.0.1");

	/* 65 bytes at hop 2, after a valid hop 1 */
	memcpy(big + 65, ",3.3.3.3", 8);
	lens[0] = 73;
	cr_assert_eq(rl_client_addr(&pc, "10.0.0.1", 8, values, lens, 1, &out),
		     RL_ADDR_INVALID);
	cr_assert_str_eq(fmt(&out, buf), "3.3.3.3");
}

/* A megabyte of garbage left of the trusted hops changes nothing. */
Test(clientaddr, huge_header_left_of_hops)
{
	size_t size = 1 << 20, i, lens[2];
	char *v = malloc(size);
	const char *values[2];
	struct rl_proxy_conf pc = { 2, NULL, 0, 0 };
	struct rl_cidr lan;
	struct rl_addr out;
	char buf[64];

	for (i = 0; i < size; i++)
		v[i] = i % 3 == 2 ? ',' : 'x';
	values[0] = v;
	lens[0] = size;
	values[1] = "1.1.1.1, 10.0.0.2";
	lens[1] = strlen(values[1]);
	cr_assert_eq(rl_client_addr(&pc, "10.0.0.1", 8, values, lens, 2, &out),
		     RL_ADDR_HEADER);
	cr_assert_str_eq(fmt(&out, buf), "1.1.1.1");

	cr_assert_eq(rl_cidr_parse("10.0.0.0/8", 10, &lan), 0);
	pc.nets = &lan;
	pc.nnets = 1;
	pc.forwarded = 1;
	values[1] = "for=1.1.1.1, for=10.0.0.2";
	lens[1] = strlen(values[1]);
	cr_assert_eq(rl_client_addr(&pc, "10.0.0.1", 8, values, lens, 2, &out),
		     RL_ADDR_HEADER);
	cr_assert_str_eq(fmt(&out, buf), "1.1.1.1");
	free(v);
}

/* NULL configuration and a NULL value array are tolerated. */
Test(clientaddr, null_arguments)
{
	struct rl_proxy_conf pc = { 1, NULL, 0, 0 };
	struct rl_addr out;
	char buf[64];

	cr_assert_eq(rl_client_addr(NULL, "1.2.3.4", 7, NULL, NULL, 0, &out),
		     RL_ADDR_REMOTE);
	cr_assert_str_eq(fmt(&out, buf), "1.2.3.4");
	cr_assert_eq(rl_client_addr(&pc, "1.2.3.4", 7, NULL, NULL, 3, &out),
		     RL_ADDR_REMOTE);
	cr_assert_str_eq(fmt(&out, buf), "1.2.3.4");
}

/* rl_client_addr_text (a bare IPv4 REMOTE_ADDR is copied, not parsed and
 * formatted) gives rl_client_addr then rl_addr_format's text. */
Test(clientaddr, text_is_parse_then_format)
{
	static const char *const remotes[] = {
		"10.0.3.232", "0.0.0.0", "255.255.255.255", " 1.2.3.4\t",
		"01.2.3.4", "1.2.3.04", "1.2.3.256", "1.2.3", "1.2.3.4.5",
		"1234.1.1.1", "1.2.3.4:80", "::1", "2001:db8::1",
		"::ffff:10.9.8.7", "[::1]:80", "garbage", "", "1.2.3.4 x",
		"9.9.9.9/8", "100.200.30.4",
	};
	static const unsigned v4bits[] = { 0, 8, 24, 31, 32, 33 };
	const char *vals[] = { "7.7.7.7, 8.8.8.8" };
	size_t lens[] = { 16 };

	const size_t nr = sizeof(remotes) / sizeof(remotes[0]);
	const size_t nb = sizeof(v4bits) / sizeof(v4bits[0]);

	for (size_t k = 0; k < nr * nb * 2; k++) {
		const char *r = remotes[k % nr];
		unsigned bits = v4bits[k / nr % nb];
		struct rl_proxy_conf pc = { .hops = (unsigned)(k / nr / nb) };
		struct rl_addr a;
		char want[64] = "", got[64];
		size_t glen = 99;
		enum rl_addr_source s1, s2;

		s1 = rl_client_addr(&pc, r, strlen(r), vals, lens, 1, &a);
		if (s1 != RL_ADDR_NONE)
			rl_addr_format(&a, bits, 64, want, sizeof(want));
		s2 = rl_client_addr_text(&pc, r, strlen(r), vals, lens, 1, bits,
					 64, got, sizeof(got), &glen);
		cr_expect_eq(s1, s2, "%s /%u", r, bits);
		cr_expect_str_eq(got, want, "%s /%u", r, bits);
		cr_expect_eq(glen, strlen(want), "%s /%u", r, bits);
	}
}

/* REMOTE_ADDR with an IPv6 zone (a link-local peer, "fe80::1%eth0"): the
 * zone names the web server's interface, not the client, so it is dropped
 * and the client counted by its address, never refused as having none.
 * In X-Forwarded-For, from clients, a zone stays an invalid entry. */
Test(clientaddr, remote_addr_zone_is_dropped)
{
	static const struct { const char *remote, *want; } cases[] = {
		{ "fe80::1%eth0", "fe80::1" },
		{ "2001:db8::1%lo", "2001:db8::1" },
		{ "::ffff:1.2.3.4%lo", "1.2.3.4" },
		{ "fe80::1%", "fe80::1" },
	};
	struct rl_proxy_conf none = { 0 };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char got[64];
		size_t len = 0;
		const char *r = cases[i].remote;
		cr_expect_eq(rl_client_addr_text(&none, r, strlen(r), NULL, NULL, 0, 32,
						 128, got, sizeof(got), &len),
			     RL_ADDR_REMOTE, "%s", r);
		cr_expect_str_eq(got, cases[i].want, "%s", r);
	}
	/* an IPv4 address has no zone: still not an address */
	struct rl_addr a;
	cr_expect_eq(rl_client_addr(&none, "1.2.3.4%eth0", 12, NULL, NULL, 0, &a),
		     RL_ADDR_NONE);
	/* a zone from a client, in X-Forwarded-For, is an invalid entry */
	struct rl_proxy_conf one = { .hops = 1 };
	const char *vals[] = { "fe80::2%eth0" };
	size_t lens[] = { 12 };
	cr_expect_eq(rl_client_addr(&one, "10.0.0.1", 8, vals, lens, 1, &a),
		     RL_ADDR_INVALID);
}
