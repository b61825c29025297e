/*
 * respond.c - the gateway's HTTP answers as CGI header blocks: 200 with
 * Variable-* facts for an authorizer, 429 with Retry-After and the
 * rate-limit headers, 400/502/503, text or JSON bodies chosen from Accept.
 * Pure formatting: the caller passes the clock and sends the bytes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "respond.h"

void
respond_buf_init(struct respond_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void
respond_buf_free(struct respond_buf *b)
{
	if (b == NULL)
		return;
	free(b->data);
	respond_buf_init(b);
}

void
respond_buf_reset(struct respond_buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void
respond_buf_add(struct respond_buf *b, const char *s, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + len + 1)
			cap *= 2;
		b->data = log_xrealloc(b->data, cap);
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, len);
	b->len += len;
	b->data[b->len] = '\0';
}

static void
add_str(struct respond_buf *b, const char *s)
{
	respond_buf_add(b, s, strlen(s));
}

static void
add_i64(struct respond_buf *b, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)v);

	respond_buf_add(b, tmp, (size_t)n);
}

/* A header value: printable ASCII only, at most RESPOND_VALUE_MAX bytes.
 * This is the one place values enter a header block, so nothing from the
 * request can start a new header line. */
static void
add_value(struct respond_buf *b, const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0' && n < RESPOND_VALUE_MAX; n++) {
		unsigned char c = (unsigned char)s[n];
		char ch = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
		respond_buf_add(b, &ch, 1);
	}
}

static void
header(struct respond_buf *b, const char *name, const char *value)
{
	add_str(b, name);
	add_str(b, ": ");
	add_value(b, value);
	add_str(b, "\r\n");
}

static void
header_i64(struct respond_buf *b, const char *name, int64_t v)
{
	add_str(b, name);
	add_str(b, ": ");
	add_i64(b, v);
	add_str(b, "\r\n");
}

/* A JSON string: quotes, backslashes and control bytes escaped; invalid
 * UTF-8 becomes U+FFFD so the document stays valid. */
static void
add_json_string(struct respond_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;

	add_str(b, "\"");
	while (*p != '\0') {
		unsigned char c = *p;
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			respond_buf_add(b, e, 2);
			p++;
		} else if (c < 0x20 || c == 0x7f) {
			char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			respond_buf_add(b, e, 6);
			p++;
		} else if (c < 0x80) {
			respond_buf_add(b, (const char *)p, 1);
			p++;
		} else {
			/* Length of a well-formed UTF-8 sequence, or 0. */
			size_t n = 0;
			if (c >= 0xc2 && c <= 0xdf)
				n = 2;
			else if (c >= 0xe0 && c <= 0xef)
				n = 3;
			else if (c >= 0xf0 && c <= 0xf4)
				n = 4;
			for (size_t i = 1; i < n; i++)
				if ((p[i] & 0xc0) != 0x80)
					n = 0;
			if (n == 3 && ((c == 0xe0 && p[1] < 0xa0) ||
				       (c == 0xed && p[1] > 0x9f)))
				n = 0;  /* overlong, or a surrogate */
			if (n == 4 && ((c == 0xf0 && p[1] < 0x90) ||
				       (c == 0xf4 && p[1] > 0x8f)))
				n = 0;  /* overlong, or above U+10FFFF */
			if (n == 0) {
				add_str(b, "\\ufffd");
				p++;
			} else {
				respond_buf_add(b, (const char *)p, n);
				p += n;
			}
		}
	}
	add_str(b, "\"");
}

/* A structured-field String (RFC 8941 sf-string): printable ASCII with '"'
 * and '\' escaped; anything else becomes '?'. */
static void
add_sf_string(struct respond_buf *b, const char *s)
{
	add_str(b, "\"");
	for (size_t n = 0; s[n] != '\0' && n < RESPOND_VALUE_MAX; n++) {
		unsigned char c = (unsigned char)s[n];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			respond_buf_add(b, e, 2);
		} else {
			char ch = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
			respond_buf_add(b, &ch, 1);
		}
	}
	add_str(b, "\"");
}

void
respond_opts_from_settings(struct respond_opts *o, const struct rl_settings *s)
{
	o->headers = s->headers;
	o->ietf_headers = s->ietf_headers;
	o->retry_after = s->retry_after;
	o->apache = 0;
	o->deny_status = 0;
	o->auth_request = 0;
}

/* ------------------------------------------------------------------ */
/* Accept                                                              */

static int
ieq(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* RFC 9110 qvalue to thousandths: "0", "0.5", "1", "1.000"; -1 when
 * malformed. */
static int
qvalue(const char *s, size_t len)
{
	int v;

	if (len == 0 || (s[0] != '0' && s[0] != '1'))
		return -1;
	v = (s[0] - '0') * 1000;
	if (len == 1)
		return v;
	if (s[1] != '.' || len > 5)
		return -1;
	int scale = 100;
	for (size_t i = 2; i < len; i++, scale /= 10) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v += (s[i] - '0') * scale;
	}
	return v > 1000 ? -1 : v;
}

/* How specifically range type/sub names want/wsub: 3 exactly, 2 by
 * "type/ *", 1 by "* / *" (without the spaces), 0 not at all. */
static int
specificity(const char *type, size_t tlen, const char *sub, size_t slen,
	    const char *want, const char *wsub)
{
	if (ieq(type, tlen, "*") && ieq(sub, slen, "*"))
		return 1;
	if (!ieq(type, tlen, want))
		return 0;
	if (ieq(sub, slen, "*"))
		return 2;
	return ieq(sub, slen, wsub) ? 3 : 0;
}

enum respond_format
respond_negotiate(const char *accept, size_t len)
{
	/* For text/plain [0] and application/json [1]: the specificity of
	 * the range that decided, and its q in thousandths. */
	int spec[2] = { 0, 0 }, q[2] = { 0, 0 };
	size_t pos = 0;

	if (accept == NULL)
		return RESPOND_TEXT;
	while (pos < len) {
		const char *el = accept + pos;
		const char *comma = memchr(el, ',', len - pos);
		size_t elen = comma ? (size_t)(comma - el) : len - pos;
		pos += elen + 1;

		const char *semi = memchr(el, ';', elen);
		const char *mr = el;
		size_t mlen = semi ? (size_t)(semi - el) : elen;
		rl_trim(&mr, &mlen);
		const char *slash = memchr(mr, '/', mlen);
		if (slash == NULL)
			continue;
		const char *type = mr, *sub = slash + 1;
		size_t tlen = (size_t)(slash - mr);
		size_t slen = mlen - tlen - 1;
		rl_trim(&type, &tlen);
		rl_trim(&sub, &slen);
		if (tlen == 0 || slen == 0)
			continue;

		/* Parameters: the first "q" is the weight. */
		int w = 1000;
		while (semi != NULL) {
			const char *p = semi + 1;
			size_t rest = elen - (size_t)(p - el);
			semi = memchr(p, ';', rest);
			size_t plen = semi ? (size_t)(semi - p) : rest;
			rl_trim(&p, &plen);
			if (plen >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
				const char *v = p + 2;
				size_t vlen = plen - 2;
				rl_trim(&v, &vlen);
				w = qvalue(v, vlen);
				break;
			}
		}
		if (w < 0)
			continue;       /* malformed weight: ignore the element */

		static const char *const want[2][2] = {
			{ "text", "plain" }, { "application", "json" }
		};
		for (int i = 0; i < 2; i++) {
			int sp = specificity(type, tlen, sub, slen, want[i][0],
					     want[i][1]);
			/* The most specific range decides; between equally
			 * specific ones (a repeated range) the higher q. */
			if (sp > spec[i] || (sp == spec[i] && sp > 0 && w > q[i])) {
				spec[i] = sp;
				q[i] = w;
			}
		}
	}
	if (q[1] > 0 && (q[1] > q[0] || (q[1] == q[0] && spec[1] > spec[0])))
		return RESPOND_JSON;
	return RESPOND_TEXT;
}

/* ------------------------------------------------------------------ */
/* Times                                                               */

int64_t
respond_seconds_until(int64_t at_ms, int64_t now_ms)
{
	if (at_ms <= now_ms)
		return 0;
	/* rounded up without adding 999 first: at_ms may be INT64_MAX */
	uint64_t d = (uint64_t)at_ms - (uint64_t)now_ms;
	return (int64_t)(d / 1000 + (d % 1000 != 0));
}

void
respond_http_date(int64_t t, char *out, size_t cap)
{
	static const char days[] = "SunMonTueWedThuFriSat";
	static const char mons[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		snprintf(out, cap, "Thu, 01 Jan 1970 00:00:00 GMT");
		return;
	}
	snprintf(out, cap, "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
		 days + 3 * tm.tm_wday, tm.tm_mday, mons + 3 * tm.tm_mon,
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */

const char *
respond_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 203: return "Non-Authoritative Information";
	case 204: return "No Content";
	case 205: return "Reset Content";
	case 206: return "Partial Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 412: return "Precondition Failed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 416: return "Range Not Satisfiable";
	case 417: return "Expectation Failed";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 425: return "Too Early";
	case 426: return "Upgrade Required";
	case 428: return "Precondition Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	}
	return "";
}

static void
status_line(struct respond_buf *b, int status)
{
	add_str(b, "Status: ");
	add_i64(b, status);
	add_str(b, " ");
	add_str(b, respond_reason(status)[0] ? respond_reason(status) : "Error");
	add_str(b, "\r\n");
}

static void
retry_after(struct respond_buf *b, enum rl_retry_format fmt, int64_t retry_s,
	    int64_t retry_ms, int64_t now_ms)
{
	if (fmt == RL_RETRY_HTTP_DATE) {
		char date[40];
		/* The instant the request would pass, rounded up to the next
		 * whole second: a date has no finer resolution, and rounding
		 * down would invite a retry that is still denied. */
		/* Saturating: a wait of INT64_MAX ms must not wrap to a
		 * date before the epoch.  HTTP dates have four-digit years,
		 * so the instant is capped at the last second of 9999. */
		const int64_t last = 253402300799LL;  /* 9999-12-31 23:59:59 */
		int64_t wait = retry_ms > 0 ? retry_ms :
			       (retry_s > INT64_MAX / 1000 ? INT64_MAX :
				retry_s * 1000);
		int64_t at_ms = now_ms > 0 && wait > INT64_MAX - now_ms ?
				INT64_MAX : now_ms + wait;
		int64_t at = at_ms >= 0 ? at_ms / 1000 + (at_ms % 1000 != 0) :
			     at_ms / 1000;
		if (at > last)
			at = last;
		respond_http_date(at, date, sizeof(date));
		header(b, "Retry-After", date);
	} else {
		header_i64(b, "Retry-After", retry_s);
	}
}

static const char *
policy_name(const struct rl_decision *d)
{
	switch (d->origin) {
	case RL_FROM_RULE:
		return d->rule && d->rule->scope ? d->rule->scope : "rule";
	case RL_FROM_DEFAULT:
		return "default";
	case RL_FROM_APPLICATION:
		return "application";
	}
	return "default";
}

void
respond_ratelimit_headers(struct respond_buf *b, const struct respond_opts *o,
			  const struct rl_decision *d, int64_t now_ms)
{
	if (d->limit == NULL)
		return;
	int denied = d->outcome == RL_DENY;
	int64_t reset_s = respond_seconds_until(d->reset_ms, now_ms);

	if (o->headers) {
		header_i64(b, "X-RateLimit-Limit", (int64_t)d->limit->count);
		header_i64(b, "X-RateLimit-Remaining", (int64_t)d->remaining);
		header_i64(b, "X-RateLimit-Reset", reset_s);
	}
	if (o->ietf_headers) {
		add_str(b, "RateLimit-Policy: ");
		add_sf_string(b, policy_name(d));
		add_str(b, ";q=");
		add_i64(b, (int64_t)d->limit->count);
		add_str(b, ";w=");
		add_i64(b, (int64_t)(d->limit->period_ms / 1000));
		add_str(b, "\r\nRateLimit: ");
		add_sf_string(b, policy_name(d));
		add_str(b, ";r=");
		add_i64(b, (int64_t)d->remaining);
		add_str(b, ";t=");
		add_i64(b, denied ? rl_retry_seconds(d->retry_ms) : reset_s);
		add_str(b, "\r\n");
	}
}

/* Would Apache's ap_custom_response take text for a URL?  It does when
 * the text starts with '/' or with [A-Za-z0-9+.-]+ followed by ':'
 * (ap_is_url). */
static int
apache_misreads(const char *s)
{
	size_t i = 0;

	if (s[0] == '/')
		return 1;
	while (s[i] != '\0' && s[i] != ':') {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'))
			return 0;
		i++;
	}
	return s[i] == ':' && i > 0;
}

/* Content-Type, the blank line and the body. */
static void
body(struct respond_buf *b, const struct respond_opts *o, enum respond_format f,
     const char *code, const char *message, int64_t retry_s, const char *limit)
{
	if (f == RESPOND_JSON) {
		add_str(b, "Content-Type: application/json\r\n\r\n{\"error\":");
		add_json_string(b, code);
		add_str(b, ",\"message\":");
		add_json_string(b, message);
		if (retry_s > 0) {
			add_str(b, ",\"retry_after\":");
			add_i64(b, retry_s);
		}
		if (limit != NULL) {
			add_str(b, ",\"limit\":");
			add_json_string(b, limit);
		}
		add_str(b, "}\n");
	} else {
		add_str(b, "Content-Type: text/plain; charset=utf-8\r\n\r\n");
		if (o != NULL && o->apache && apache_misreads(message))
			add_str(b, " ");
		add_str(b, message);
		add_str(b, "\n");
	}
}

int
respond_too_large(struct respond_buf *b, enum respond_format f)
{
	return respond_error(b, 413, 0, "content_too_large",
			     "Content Too Large: the request body exceeds this path's max-body", f);
}

int
respond_bad_gateway(struct respond_buf *b, enum respond_format f)
{
	return respond_error(b, 502, 0, "bad_gateway",
			     "Bad Gateway: the application failed to answer", f);
}

int
respond_error(struct respond_buf *b, int status, int64_t retry_s,
	      const char *code, const char *message, enum respond_format f)
{
	respond_buf_reset(b);
	status_line(b, status);
	if (retry_s > 0)
		header_i64(b, "Retry-After", retry_s);
	add_str(b, "Cache-Control: no-store\r\n");
	body(b, NULL, f, code, message, retry_s, NULL);
	return status;
}

/* Variable-NAME: value, skipped when there is no value. */
static void
variable(struct respond_buf *b, const char *name, const char *value)
{
	if (value == NULL || value[0] == '\0' || strcmp(value, "-") == 0)
		return;
	add_str(b, "Variable-");
	header(b, name, value);
}

static void
variable_i64(struct respond_buf *b, const char *name, int64_t v)
{
	char tmp[24];

	snprintf(tmp, sizeof(tmp), "%lld", (long long)v);
	variable(b, name, tmp);
}

static const char *
default_message(const struct rl_decision *d)
{
	return d->message ? d->message : "Too Many Requests: rate limit exceeded";
}

int
respond_authorizer(struct respond_buf *b, const struct respond_opts *o,
		   const struct rl_decision *d, int64_t now_ms,
		   enum respond_format f)
{
	int deny = o->deny_status ? o->deny_status : 429;

	switch (d->outcome) {
	case RL_ALLOW:
		respond_buf_reset(b);
		status_line(b, 200);
		variable(b, "RL_CLIENT", d->client);
		variable(b, "RL_KEY", d->key);
		if (d->exempt)
			variable(b, "RL_EXEMPT", "1");
		if (d->rule != NULL)
			variable(b, "RL_RULE", d->rule->pattern.text);
		if (d->limit != NULL) {
			variable(b, "RL_LIMIT", d->limit->text);
			variable_i64(b, "RL_REMAINING", (int64_t)d->remaining);
			variable_i64(b, "RL_RESET",
				     respond_seconds_until(d->reset_ms, now_ms));
		}
		if (d->would_deny)
			variable(b, "RL_DRY_RUN_DENY", "1");
		if (o->auth_request)
			add_str(b, "Rategate-Decision: allow\r\n");
		respond_ratelimit_headers(b, o, d, now_ms);
		add_str(b, "\r\n");
		return 200;
	case RL_DENY: {
		int64_t rs = rl_retry_seconds(d->retry_ms);
		respond_buf_reset(b);
		status_line(b, deny);
		retry_after(b, o->retry_after, rs, d->retry_ms, now_ms);
		respond_ratelimit_headers(b, o, d, now_ms);
		add_str(b, "Cache-Control: no-store\r\n");
		body(b, o, f, "rate_limited", default_message(d), rs,
		     d->limit ? d->limit->text : NULL);
		return deny;
	}
	case RL_DENY_KEY:
		respond_buf_reset(b);
		status_line(b, deny);
		add_str(b, "Cache-Control: no-store\r\n");
		body(b, o, f, "missing_key", default_message(d), 0, NULL);
		return deny;
	case RL_BAD_REQUEST:
		return respond_error(b, 400, 0, "bad_request",
				     "Bad Request: the request path is not valid", f);
	case RL_TOO_LARGE:
		return respond_too_large(b, f);
	case RL_STORE_ERROR:
		break;
	}
	return respond_error(b, 503, RESPOND_STORE_RETRY_S, "unavailable",
			     "Service Unavailable: the rate limiter cannot reach its counters", f);
}
