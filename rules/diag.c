/*
 * diag.c - the library's diagnostic helpers: one way to quote offending
 * text and one way to fill an rl_diag, shared by every parser.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Render s[0..n) double-quoted for a message: bytes outside printable ASCII
 * and the quote and backslash as escapes, long text cut to 40 bytes and
 * "..." so the message fits RL_MSG_MAX. */
const char *
rl_quote(char *buf, size_t cap, const char *s, size_t n)
{
	size_t i, o = 0;

	buf[o++] = '"';
	for (i = 0; i < n && i < 40 && o + 8 < cap; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c > 0x7e) {
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	if (i < n) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

int
rl_fail(struct rl_diag *d, size_t col, const char *fmt, ...)
{
	va_list ap;

	if (d == NULL)
		return -1;
	d->col = col;
	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof d->msg, fmt, ap);
	va_end(ap);
	return -1;
}
