/*
 * target.h - the request target (path and query) from CGI params.
 */
#ifndef RATEGATE_TARGET_H
#define RATEGATE_TARGET_H

#include <stddef.h>

/* path: REQUEST_URI up to '?' or '#' (an absolute-form URI loses its
 * scheme and authority; a raw '#', which lighttpd and nginx pass on but
 * route without, ends the target), or SCRIPT_NAME + PATH_INFO without
 * REQUEST_URI (decoded already: each '%' of theirs is written "%25", so
 * that the rules' one decoding gives them back as they were); query: REQUEST_URI's query, else QUERY_STRING.  buf (cap
 * bytes) holds the concatenation when one is needed; path and query point
 * into the arguments or buf.  Returns 0, or -1 when there is no path at
 * all. */
struct target {
	const char *path;
	size_t path_len;
	const char *query;      /* NULL when none */
	size_t query_len;
};
int target_parse(const char *request_uri, const char *script_name,
		 const char *path_info, const char *query_string, char *buf,
		 size_t cap, struct target *t);

#endif
