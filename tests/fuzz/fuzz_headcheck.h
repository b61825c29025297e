/*
 * fuzz_headcheck.h - for the libFuzzer targets: what rategate sends a web
 * server as a response head must be well-formed whatever an application
 * wrote: it starts with "Status: ", every line is "Name: value" with a
 * token name and ends in CRLF, no other CR, LF or NUL appears, and an
 * empty line ends it.  Aborts otherwise.
 */
#ifndef TESTS_FUZZ_HEADCHECK_H
#define TESTS_FUZZ_HEADCHECK_H

#include <stdlib.h>
#include <string.h>

static inline int
fuzz_is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* Checks the head at the start of s[0..n); returns its length, the empty
 * line included (what follows is the body). */
static inline size_t
fuzz_check_head(const char *s, size_t n)
{
	size_t pos = 0;

	if (n < 12 || strncmp(s, "Status: ", 8) != 0)
		abort();
	for (;;) {
		const char *nl = memchr(s + pos, '\n', n - pos);
		if (nl == NULL)
			abort();                /* the head never ends */
		size_t len = (size_t)(nl - (s + pos));
		if (len == 0 || s[pos + len - 1] != '\r')
			abort();                /* LF without CR */
		len--;
		if (memchr(s + pos, '\r', len) != NULL ||
		    memchr(s + pos, '\0', len) != NULL)
			abort();                /* a CR or NUL inside a line */
		if (len == 0)
			return pos + 2;         /* the empty line */
		size_t i = 0;
		while (i < len && fuzz_is_tchar((unsigned char)s[pos + i]))
			i++;
		if (i == 0 || i >= len || s[pos + i] != ':')
			abort();                /* not "Name: value" */
		pos = (size_t)(nl - s) + 1;
	}
}

#endif
