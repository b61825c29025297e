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
	size_t sl = script_name ? strlen(script_name) : 0;
	size_t pl = path_info ? strlen(path_info) : 0;
	if (sl + pl == 0 || sl + pl + 1 > cap)
		return -1;
	memcpy(buf, script_name ? script_name : "", sl);
	memcpy(buf + sl, path_info ? path_info : "", pl);
	buf[sl + pl] = '\0';
	t->path = buf;
	t->path_len = sl + pl;
	if (query_string != NULL && query_string[0] != '\0') {
		t->query = query_string;
		t->query_len = strlen(query_string);
	}
	return 0;
}
