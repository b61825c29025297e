/*
 * clientaddr.c - who the client is: parse addresses and networks, and find
 * the client among REMOTE_ADDR and the X-Forwarded-For or RFC 7239
 * Forwarded entries written by the proxies we trust.
 *
 * Only the right end of a proxy header can be trusted: each trusted proxy
 * appends the address it received from, everything to the left may have
 * been written by the client.  So entries are walked from the right, one at
 * a time, and only as far as the configuration trusts; an entry further
 * left is never parsed and cannot change the result, and the number of
 * entries parsed is O(hops) (with trusted networks, one more than the
 * trusted entries found), whatever the header size.
 *
 * Choices:
 *   - header values are concatenated in arrival order; empty list elements
 *     (",," or an empty or blank value) are skipped, as RFC 7230 section 7
 *     asks of list recipients; every other entry counts;
 *   - an entry longer than 64 bytes (after trimming spaces and tabs), or
 *     that is not an address, is invalid: "unknown", host names, zone ids;
 *   - with both hops and nets set, nets rule and hops is ignored: a network
 *     check is stricter than counting;
 *   - Forwarded: the for= parameter of each element (name case-insensitive,
 *     value a token or quoted-string, at most once per element); an element
 *     without for=, with a malformed pair, with for=unknown or an obfuscated
 *     "_name" node is an invalid entry; an obfuscated port ("1.2.3.4:_p")
 *     is dropped.  Element boundaries are found scanning right to left with
 *     quoted-strings honoured, so a broken quote in the client's part cannot
 *     swallow what a trusted proxy appended.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Longest entry taken as an address, bytes after trimming. */
#define ADDR_ENTRY_MAX 64

static int is_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* Parse a ":port" suffix p[0..n): 1 to 5 digits, at most 65535. */
static int port_ok(const char *p, size_t n)
{
	unsigned v = 0;
	size_t i;

	if (n < 1 || n > 5)
		return -1;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	return v <= 65535 ? 0 : -1;
}

/* Dotted-quad IPv4 exactly as inet_pton(AF_INET) takes it (four decimal
 * octets, no leading zeros), by hand: it is on every request's path.  So
 * the text it accepts is the canonical one, as rl_addr_format writes it. */
static int parse_v4n(const char *t, const char *end, uint8_t out[4])
{
	for (int part = 0; part < 4; part++) {
		unsigned v, d;

		if (t == end || (v = (unsigned)(*t - '0')) > 9)
			return -1;
		t++;
		/* a second and a third digit; a fourth fails at the '.' or
		 * end test below */
		if (t < end && (d = (unsigned)(*t - '0')) <= 9) {
			if (v == 0)
				return -1;      /* leading zero */
			v = v * 10 + d;
			t++;
			if (t < end && (d = (unsigned)(*t - '0')) <= 9) {
				v = v * 10 + d;
				t++;
				if (v > 255)
					return -1;
			}
		}
		out[part] = (uint8_t)v;
		if (part < 3 && (t == end || *t++ != '.'))
			return -1;
	}
	return t == end ? 0 : -1;
}

static int parse_v4(const char *t, uint8_t out[4])
{
	return parse_v4n(t, t + strlen(t), out);
}

/* Parse the bare address text (NUL-terminated, no brackets or port) into
 * a.  *mapped is set when it was an IPv4-mapped IPv6 address, folded into
 * IPv4. */
static int parse_bare(const char *text, int v6_only, struct rl_addr *a,
		      int *mapped)
{
	static const uint8_t v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
					       0xff, 0xff };

	memset(a, 0, sizeof *a);
	*mapped = 0;
	if (!v6_only && parse_v4(text, a->b) == 0) {
		a->family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, text, a->b) != 1)
		return -1;
	a->family = 6;
	if (memcmp(a->b, v4_prefix, sizeof v4_prefix) == 0) {
		memmove(a->b, a->b + 12, 4);
		memset(a->b + 4, 0, 12);
		a->family = 4;
		*mapped = 1;
	}
	return 0;
}

/* The one address parser: ports and brackets only when with_port. */
static int parse_addr(const char *s, size_t len, int with_port,
		      struct rl_addr *a, int *mapped)
{
	char buf[ADDR_ENTRY_MAX + 1];
	const char *colon;
	size_t n;

	rl_trim(&s, &len);
	/* the common case first, IPv4 without a port: no scan, no copy (the
	 * text holds only digits and dots, so no test below could differ) */
	memset(a, 0, sizeof *a);
	*mapped = 0;
	if (parse_v4n(s, s + len, a->b) == 0) {
		a->family = 4;
		return 0;
	}
	if (len == 0 || len > ADDR_ENTRY_MAX || memchr(s, '\0', len) != NULL)
		return -1;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (!with_port || close == NULL)
			return -1;
		n = (size_t)(close - s) - 1;
		if (close + 1 < s + len
		    && (close[1] != ':'
			|| port_ok(close + 2, (size_t)(s + len - close - 2)) < 0))
			return -1;
		memcpy(buf, s + 1, n);
		buf[n] = '\0';
		return parse_bare(buf, 1, a, mapped);
	}
	n = len;
	colon = memchr(s, ':', len);
	/* One colon is IPv4 with a port; more is a bare IPv6 address. */
	if (colon != NULL && memchr(colon + 1, ':', (size_t)(s + len - colon - 1))
	    == NULL) {
		if (!with_port
		    || port_ok(colon + 1, (size_t)(s + len - colon - 1)) < 0)
			return -1;
		n = (size_t)(colon - s);
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	return parse_bare(buf, 0, a, mapped);
}

int rl_addr_parse(const char *s, size_t len, struct rl_addr *a)
{
	int mapped;

	if (s == NULL)
		return -1;
	return parse_addr(s, len, 1, a, &mapped);
}

/* Clear the bits of a beyond the first bits. */
static void mask_bits(struct rl_addr *a, unsigned bits)
{
	unsigned i;

	for (i = 0; i < 16; i++) {
		if (bits >= 8 * (i + 1))
			continue;
		if (bits > 8 * i)
			a->b[i] &= (uint8_t)(0xff << (8 - (bits - 8 * i)));
		else
			a->b[i] = 0;
	}
}

int rl_cidr_parse(const char *s, size_t len, struct rl_cidr *c)
{
	const char *slash;
	size_t alen;
	unsigned bits, width;
	int mapped;

	if (s == NULL)
		return -1;
	rl_trim(&s, &len);
	slash = memchr(s, '/', len);
	alen = slash != NULL ? (size_t)(slash - s) : len;
	/* No spaces inside: "10.0.0.0 /8" is a typo, not a network. */
	if (alen == 0 || is_ws(s[alen - 1])
	    || parse_addr(s, alen, 0, &c->net, &mapped) < 0)
		return -1;
	width = c->net.family == 4 ? 32 : 128;
	if (slash == NULL) {
		bits = width;
	} else {
		size_t i, n = len - alen - 1;

		if (n < 1 || n > 3)
			return -1;
		for (bits = 0, i = 0; i < n; i++) {
			char d = slash[1 + i];

			if (d < '0' || d > '9')
				return -1;
			bits = bits * 10 + (unsigned)(d - '0');
		}
		/* "::ffff:10.0.0.0/104" is the IPv4 network 10.0.0.0/8. */
		if (mapped) {
			if (bits < 96)
				return -1;
			bits -= 96;
		}
		if (bits > width)
			return -1;
	}
	mask_bits(&c->net, bits);
	c->bits = bits;
	return 0;
}

int rl_cidr_contains(const struct rl_cidr *c, const struct rl_addr *a)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (c->net.family != a->family)
		return 0;
	if (memcmp(c->net.b, a->b, full) != 0)
		return 0;
	if (rest != 0) {
		uint8_t m = (uint8_t)(0xff << (8 - rest));

		if ((c->net.b[full] & m) != (a->b[full] & m))
			return 0;
	}
	return 1;
}

void rl_addr_format(const struct rl_addr *a, unsigned v4bits,
		    unsigned v6bits, char *out, size_t cap)
{
	char text[INET6_ADDRSTRLEN + 8];
	struct rl_addr m = *a;
	unsigned width = a->family == 4 ? 32 : 128;
	unsigned bits = a->family == 4 ? v4bits : v6bits;

	if (cap == 0)
		return;
	/* Out of range means no masking: the loader validates the prefix. */
	if (bits == 0 || bits > width)
		bits = width;
	if (bits < width)
		mask_bits(&m, bits);
	/* IPv4 by hand: inet_ntop's sprintf would be a third of a decision. */
	size_t n = 0;
	if (a->family == 4) {
		for (int i = 0; i < 4; i++) {
			unsigned v = m.b[i];
			if (i > 0)
				text[n++] = '.';
			if (v >= 100)
				text[n++] = (char)('0' + v / 100);
			if (v >= 10)
				text[n++] = (char)('0' + v / 10 % 10);
			text[n++] = (char)('0' + v % 10);
		}
		text[n] = '\0';
	} else if (inet_ntop(AF_INET6, m.b, text, sizeof text) == NULL) {
		out[0] = '\0';
		return;
	} else {
		n = strlen(text);
	}
	if (bits < width) {
		text[n++] = '/';
		if (bits >= 100)
			text[n++] = (char)('0' + bits / 100);
		if (bits >= 10)
			text[n++] = (char)('0' + bits / 10 % 10);
		text[n++] = (char)('0' + bits % 10);
		text[n] = '\0';
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(out, text, n);
	out[n] = '\0';
}

/* Right-to-left walk over the entries of all header values. */
struct walk {
	const char *const *values;
	const size_t *lens;
	size_t vi;              /* values left to visit, the current one is
				   values[vi - 1] */
	size_t pos;             /* end of the unread part of the current one */
	int started;            /* pos is set for values[vi - 1] */
	int forwarded;
};

/* Start of the element that ends at v[end]: one past the ',' before it
 * outside a quoted-string, or 0.  A '"' counts when an even number of
 * backslashes precede it (inside a quoted-string "\\" is one backslash). */
static size_t element_start(const char *v, size_t end, int forwarded,
			    size_t *comma)
{
	size_t i = end;
	int quoted = 0;

	while (i > 0) {
		char c = v[--i];

		if (c == ',' && !quoted) {
			*comma = i;
			return i + 1;
		}
		if (c == '"' && forwarded) {
			size_t j = i, bs = 0;

			while (j > 0 && v[j - 1] == '\\') {
				j--;
				bs++;
			}
			if (bs % 2 == 0)
				quoted = !quoted;
		}
	}
	*comma = (size_t)-1;
	return 0;
}

/* The next non-empty entry from the right, trimmed: 1, or 0 at the end. */
static int walk_next(struct walk *w, const char **e, size_t *elen)
{
	while (w->vi > 0) {
		const char *v = w->values[w->vi - 1];
		size_t start, comma;

		if (!w->started) {
			w->pos = v != NULL ? w->lens[w->vi - 1] : (size_t)-1;
			w->started = 1;
		}
		if (w->pos == (size_t)-1) {
			w->vi--;
			w->started = 0;
			continue;
		}
		start = element_start(v, w->pos, w->forwarded, &comma);
		*e = v + start;
		*elen = w->pos - start;
		w->pos = comma;
		rl_trim(e, elen);
		if (*elen > 0)
			return 1;
	}
	return 0;
}

static int is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	       || (c >= '0' && c <= '9')
	       || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int ascii_ieq(const char *s, size_t n, const char *lit)
{
	size_t i;

	if (strlen(lit) != n)
		return 0;
	for (i = 0; i < n; i++)
		if (lower(s[i]) != lit[i])
			return 0;
	return 1;
}

/* Drop an obfuscated port ("1.2.3.4:_a1", "[::1]:_x"): the node is known,
 * only its port is hidden.  Returns the length without it. */
static size_t strip_obfport(const char *node, size_t n)
{
	size_t c = n, k;

	while (c > 0 && node[c - 1] != ':')
		c--;
	if (c < 2 || c >= n || node[c] != '_')
		return n;
	for (k = c + 1; k < n; k++)
		if (!is_tchar(node[k]) || strchr("!#$%&'*+^`|~", node[k]))
			return n;
	/* After "]" or an IPv4 address (no other ':'), this is a port. */
	if (node[c - 2] != ']' && memchr(node, ':', c - 1) != NULL)
		return n;
	return c - 1;
}

/* The for= node of one Forwarded element e[0..n), as an address.  Every
 * pair must be token=value; for= must occur exactly once. */
static int forwarded_for(const char *e, size_t n, struct rl_addr *a)
{
	char node[ADDR_ENTRY_MAX + 1];
	size_t i = 0, nlen = 0;
	int found = 0, mapped;

	while (i <= n) {
		size_t ps = i, eq, k, vlen, o = 0;
		const char *p, *v;
		size_t plen;
		int quoted = 0, is_for;

		/* The pair ends at the next ';' outside a quoted-string. */
		while (i < n && (quoted || e[i] != ';')) {
			if (quoted && e[i] == '\\' && i + 1 < n)
				i++;
			else if (e[i] == '"')
				quoted = !quoted;
			i++;
		}
		if (quoted)
			return -1;
		p = e + ps;
		plen = i - ps;
		i++;
		rl_trim(&p, &plen);
		if (plen == 0)
			continue;
		for (eq = 0; eq < plen && is_tchar(p[eq]); eq++)
			;
		if (eq == 0 || eq == plen || p[eq] != '=')
			return -1;
		is_for = ascii_ieq(p, eq, "for");
		if (is_for && found++)
			return -1;
		v = p + eq + 1;
		vlen = plen - eq - 1;
		if (vlen > 0 && v[0] == '"') {
			for (k = 1; k < vlen && v[k] != '"'; k++) {
				if (v[k] == '\\' && ++k == vlen)
					return -1;
				if (is_for && o < sizeof node)
					node[o] = v[k];
				o++;
			}
			if (k + 1 != vlen)
				return -1;
		} else {
			/* A token; ':' and brackets are tolerated because
			 * some proxies forget to quote "[::1]:80". */
			for (k = 0; k < vlen; k++) {
				if (!is_tchar(v[k]) && v[k] != ':'
				    && v[k] != '[' && v[k] != ']')
					return -1;
				if (is_for && o < sizeof node)
					node[o] = v[k];
				o++;
			}
		}
		if (is_for)
			nlen = o;
	}
	if (!found || nlen == 0 || nlen > ADDR_ENTRY_MAX || node[0] == '_'
	    || ascii_ieq(node, nlen, "unknown"))
		return -1;
	nlen = strip_obfport(node, nlen);
	return parse_addr(node, nlen, 1, a, &mapped);
}

static int entry_addr(int forwarded, const char *e, size_t n,
		      struct rl_addr *a)
{
	int mapped;

	if (forwarded)
		return forwarded_for(e, n, a);
	return parse_addr(e, n, 1, a, &mapped);
}

int rl_cidrs_contain(const struct rl_cidr *nets, size_t n,
		     const struct rl_addr *a)
{
	for (size_t i = 0; i < n; i++)
		if (rl_cidr_contains(&nets[i], a))
			return 1;
	return 0;
}

static int is_trusted(const struct rl_proxy_conf *pc, const struct rl_addr *a)
{
	return rl_cidrs_contain(pc->nets, pc->nnets, a);
}

int rl_addr_parse_peer(const char *s, size_t len, struct rl_addr *a)
{
	const char *pct = s != NULL ? memchr(s, '%', len) : NULL;

	if (pct != NULL && memchr(s, ':', (size_t)(pct - s)) != NULL)
		len = (size_t)(pct - s);
	return rl_addr_parse(s, len, a);
}

enum rl_addr_source rl_client_addr(const struct rl_proxy_conf *pc,
				   const char *remote, size_t remote_len,
				   const char *const *values,
				   const size_t *value_lens, size_t nvalues,
				   struct rl_addr *out)
{
	struct walk w;
	struct rl_addr peer, cur, last;
	const char *e;
	size_t elen;
	unsigned k = 0;

	/* (In X-Forwarded-For and Forwarded, from clients, a zone stays an
	 * invalid entry: only the peer's is dropped.) */
	if (rl_addr_parse_peer(remote, remote_len, &peer) < 0)
		return RL_ADDR_NONE;
	*out = peer;
	if (pc == NULL || (pc->hops == 0 && (pc->nets == NULL
					     || pc->nnets == 0)))
		return RL_ADDR_REMOTE;

	memset(&w, 0, sizeof w);
	w.values = values;
	w.lens = value_lens;
	w.vi = values != NULL && value_lens != NULL ? nvalues : 0;
	w.forwarded = pc->forwarded;
	last = peer;

	if (pc->nets != NULL && pc->nnets > 0) {
		if (!is_trusted(pc, &peer))
			return RL_ADDR_REMOTE;
		while (walk_next(&w, &e, &elen)) {
			k++;
			if (entry_addr(w.forwarded, e, elen, &cur) < 0) {
				*out = last;
				return RL_ADDR_INVALID;
			}
			if (!is_trusted(pc, &cur)) {
				*out = cur;
				return RL_ADDR_HEADER;
			}
			last = cur;
		}
		*out = last;
		return k == 0 ? RL_ADDR_REMOTE : RL_ADDR_HEADER;
	}

	while (walk_next(&w, &e, &elen)) {
		k++;
		if (entry_addr(w.forwarded, e, elen, &cur) < 0) {
			*out = last;
			return RL_ADDR_INVALID;
		}
		if (k == pc->hops) {
			*out = cur;
			return RL_ADDR_HEADER;
		}
		last = cur;
	}
	*out = last;
	return k == 0 ? RL_ADDR_REMOTE : RL_ADDR_SHORT;
}

enum rl_addr_source rl_client_addr_text(const struct rl_proxy_conf *pc,
					const char *remote, size_t remote_len,
					const char *const *values,
					const size_t *value_lens,
					size_t nvalues, unsigned v4bits,
					unsigned v6bits, char *out, size_t cap,
					size_t *out_len)
{
	struct rl_addr a;
	enum rl_addr_source src;

	/* REMOTE_ADDR alone, a bare IPv4 address and no IPv4 grouping: the
	 * address is its own text (parse_v4n accepts only the canonical
	 * spelling), so copy it instead of parsing and formatting. */
	if (remote != NULL && (v4bits == 0 || v4bits >= 32) &&
	    (pc == NULL || (pc->hops == 0 && (pc->nets == NULL ||
					      pc->nnets == 0)))) {
		const char *s = remote;
		size_t len = remote_len;
		uint8_t b[4];

		rl_trim(&s, &len);
		if (len < cap && parse_v4n(s, s + len, b) == 0) {
			memcpy(out, s, len);
			out[len] = '\0';
			*out_len = len;
			return RL_ADDR_REMOTE;
		}
	}
	src = rl_client_addr(pc, remote, remote_len, values, value_lens,
			     nvalues, &a);
	out[0] = '\0';
	if (src != RL_ADDR_NONE)
		rl_addr_format(&a, v4bits, v6bits, out, cap);
	*out_len = strlen(out);
	return src;
}
