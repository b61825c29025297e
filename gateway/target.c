/*
 * target.c - the request target: the path and query a request names, from
 * its CGI/FastCGI params.  The gateway and the CGI wrapper read requests
 * with it (fcgi_request), and `rategate replay` reads the targets of its
 * logs with it too, so that a replay decides on the path the gateway
 * would.
 */
#include "config.h"

#include <string.h>
#include <strings.h>

#include "target.h"

int
target_parse(const char *request_uri, const char *script_name,
	     const char *path_info, const char *query_string, char *buf,
	     size_t cap, struct target *t)
{
	t->query = NULL;
	t->query_len = 0;
	if (request_uri != NULL && request_uri[0] != '\0') {
		const char *p = request_uri;
		/* absolute-form (a proxy request): drop scheme and authority */
		/* A raw '#' ends the target: lighttpd and nginx pass it in
		 * REQUEST_URI but route without the fragment, so "/login#x"
		 * is /login to them and must be to us. */
		size_t end = strcspn(p, "#");
		if (strncasecmp(p, "http://", 7) == 0 ||
		    strncasecmp(p, "https://", 8) == 0) {
			const char *auth = strstr(p, "//") + 2;
			const char *slash = strpbrk(auth, "/?#");
			if (slash == NULL || *slash != '/') {
				/* no path: the root, then any query */
				t->path = "/";
				t->path_len = 1;
				if (slash != NULL && *slash == '?') {
					t->query = slash + 1;
					t->query_len = (size_t)(p + end - t->query);
				}
				return 0;
			}
			end -= (size_t)(slash - p);
			p = slash;
		}
		const char *q = memchr(p, '?', end);
		t->path = p;
		t->path_len = q ? (size_t)(q - p) : end;
		if (q != NULL) {
			t->query = q + 1;
			t->query_len = (size_t)(p + end - t->query);
		}
		return 0;
	}
	/* SCRIPT_NAME and PATH_INFO come decoded, and the rules decode the
	 * path once more: a '%' of theirs is written "%25" so that a client
	 * who sent "%252e%252e" does not get ".." (and a literal "100%"
	 * stays a path) */
	const char *part[2] = { script_name, path_info };
	size_t n = 0;

	for (int k = 0; k < 2; k++) {
		for (const char *c = part[k]; c != NULL && *c; c++) {
			size_t need = *c == '%' ? 3 : 1;
			if (n + need + 1 > cap)
				return -1;
			if (*c == '%') {
				memcpy(buf + n, "%25", 3);
			} else {
				buf[n] = *c;
			}
			n += need;
		}
	}
	if (n == 0)
		return -1;
	buf[n] = '\0';
	t->path = buf;
	t->path_len = n;
	if (query_string != NULL && query_string[0] != '\0') {
		t->query = query_string;
		t->query_len = strlen(query_string);
	}
	return 0;
}
