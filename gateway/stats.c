/*
 * stats.c - counters and the statistics endpoint's JSON and Prometheus
 * text (see stats.h).  No I/O: the answer is built in a respond_buf.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "stats.h"

static const char *const reason_names[STATS_REASONS] = {
	"rate", "concurrency", "missing_key", "too_large", "bad_request",
	"store_error"
};

struct stats_rules *
stats_rules_new(const struct rl_ruleset *rs, const struct stats_rules *old)
{
	size_t n = rl_ruleset_nrules(rs);
	struct stats_rules *sr = log_xrealloc(NULL, sizeof(*sr));

	sr->n = n + 1;
	sr->r = log_xrealloc(NULL, sr->n * sizeof(*sr->r));
	for (size_t i = 0; i < sr->n; i++) {
		struct stats_rule *r = &sr->r[i];
		if (i < n) {
			const struct rl_rule *rule = rl_ruleset_rule(rs, i);
			r->name = rule->pattern.text;
			r->file = rule->file;
			r->line = rule->line;
		} else {
			r->name = "(default)";
			r->file = "";
			r->line = 0;
		}
		uint64_t a = 0, d = 0;
		/* Carry over: the same pattern in the same file (its line
		 * may have moved).  A file may hold one pattern several
		 * times (methods=POST, methods=GET): the k-th such rule
		 * takes the k-th one's totals, never another's. */
		size_t k = 0;
		for (size_t j = 0; j < i && j < n; j++)
			if (strcmp(sr->r[j].name, r->name) == 0 &&
			    strcmp(sr->r[j].file, r->file) == 0)
				k++;
		for (size_t j = 0; old != NULL && j < old->n; j++) {
			const struct stats_rule *o = &old->r[j];
			if (strcmp(o->name, r->name) == 0 &&
			    strcmp(o->file, r->file) == 0 && k-- == 0) {
				a = atomic_load(&o->allowed);
				d = atomic_load(&o->denied);
				break;
			}
		}
		atomic_init(&r->allowed, a);
		atomic_init(&r->denied, d);
	}
	return sr;
}

void
stats_rules_free(struct stats_rules *sr)
{
	if (sr == NULL)
		return;
	free(sr->r);
	free(sr);
}

/* d's rule's totals: its own, or the last entry's (no rule: the defaults). */
static struct stats_rule *
rule_of(struct stats_rules *sr, const struct rl_decision *d)
{
	size_t i = sr->n - 1;

	if (d != NULL && d->rule != NULL && d->rule->index < sr->n - 1)
		i = d->rule->index;
	return &sr->r[i];
}

void
stats_count(struct stats *s, struct stats_rules *sr,
	    const struct rl_decision *d, int denied, enum stats_reason reason)
{
	struct stats_rule *r = rule_of(sr, d);

	if (denied) {
		atomic_fetch_add(&s->denied[reason], 1);
		atomic_fetch_add(&r->denied, 1);
	} else {
		atomic_fetch_add(&s->allowed, 1);
		if (d != NULL && d->would_deny)
			atomic_fetch_add(&s->dry_run_denied, 1);
		atomic_fetch_add(&r->allowed, 1);
	}
}

void
stats_recount_too_large(struct stats *s, struct stats_rules *sr,
			const struct rl_decision *d)
{
	struct stats_rule *r = rule_of(sr, d);

	atomic_fetch_sub(&s->allowed, 1);
	atomic_fetch_sub(&r->allowed, 1);
	if (d != NULL && d->would_deny)         /* refused after all */
		atomic_fetch_sub(&s->dry_run_denied, 1);
	atomic_fetch_add(&s->denied[STATS_TOO_LARGE], 1);
	atomic_fetch_add(&r->denied, 1);
}

/* Does the comma-separated Accept value name this media type (any
 * parameters, q > 0)? */
static int
accept_names(const char *accept, const char *type)
{
	size_t tl = strlen(type);
	const char *p = accept;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		size_t sl = len;
		rl_trim(&s, &sl);
		const char *semi = memchr(s, ';', sl);
		size_t mt = semi ? (size_t)(semi - s) : sl;
		while (mt > 0 && (s[mt - 1] == ' ' || s[mt - 1] == '\t'))
			mt--;
		if (mt == tl && strncasecmp(s, type, tl) == 0) {
			/* q=0 means "not this" */
			const char *q = semi;
			int zero = 0;
			while (q != NULL && q < s + sl) {
				const char *v = q + 1;
				while (v < s + sl && (*v == ' ' || *v == '\t'))
					v++;
				if (s + sl - v >= 2 && (v[0] == 'q' || v[0] == 'Q') &&
				    v[1] == '=') {
					zero = strtod(v + 2, NULL) <= 0.0;
				}
				q = memchr(q + 1, ';', (size_t)(s + sl - q - 1));
			}
			if (!zero)
				return 1;
		}
		p = end ? end + 1 : NULL;
	}
	return 0;
}

enum stats_format
stats_negotiate(const char *query, const char *accept)
{
	const char *p = query;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 17 && strncmp(p, "format=prometheus", 17) == 0)
			return STATS_PROMETHEUS;
		if (len == 11 && strncmp(p, "format=json", 11) == 0)
			return STATS_JSON;
		p = end ? end + 1 : NULL;
	}
	if (accept == NULL || accept_names(accept, "application/json"))
		return STATS_JSON;
	if (accept_names(accept, "text/plain") ||
	    accept_names(accept, "application/openmetrics-text"))
		return STATS_PROMETHEUS;
	return STATS_JSON;
}

static void
addf(struct respond_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
addf(struct respond_buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		respond_buf_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* s as a JSON string body or a Prometheus label value: both escape '"'
 * and '\' the same way; control bytes become '?' and bytes that are not
 * UTF-8 U+FFFD (both formats must be UTF-8; rule patterns and file names
 * come from a file we do not control). */
static void
add_escaped(struct respond_buf *b, const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			respond_buf_add(b, e, 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			respond_buf_add(b, "?", 1);
			i++;
		} else {
			size_t l = log_utf8_len((const unsigned char *)s + i, n - i);
			if (l == 0) {
				respond_buf_add(b, "\xef\xbf\xbd", 3);  /* U+FFFD */
				i++;
			} else {
				respond_buf_add(b, s + i, l);
				i += l;
			}
		}
	}
}

#define LD(x) ((unsigned long long)atomic_load(&(x)))

static uint64_t
denied_total(const struct stats *s)
{
	uint64_t t = 0;

	for (int i = 0; i < STATS_REASONS; i++)
		t += atomic_load(&s->denied[i]);
	return t;
}

static void
render_json(struct respond_buf *b, const struct stats *s,
	    const struct stats_rules *sr, const struct stats_store *st,
	    const struct stats_upstream *ups, size_t nups, int64_t now_ms,
	    long pid)
{
	addf(b, "{\"version\":\"%s\",\"pid\":%ld,\"uptime_s\":%lld,", PACKAGE_VERSION,
	     pid, (long long)((now_ms - s->started_ms) / 1000));
	addf(b, "\"requests\":{\"allowed\":%llu,\"denied\":%llu,\"dry_run_denied\":%llu},",
	     LD(s->allowed), (unsigned long long)denied_total(s), LD(s->dry_run_denied));
	respond_buf_add(b, "\"denials\":{", 11);
	for (int i = 0; i < STATS_REASONS; i++)
		addf(b, "%s\"%s\":%llu", i ? "," : "", reason_names[i], LD(s->denied[i]));
	addf(b, "},\"inflight\":%lld,\"upstream_errors\":%llu,\"client_timeouts\":%llu,\"proxy_header_untrusted\":%llu,",
	     (long long)atomic_load(&s->inflight), LD(s->upstream_errors),
	     LD(s->client_timeouts), LD(s->proxy_header_untrusted));
	addf(b, "\"reloads\":{\"ok\":%llu,\"failed\":%llu},", LD(s->reloads_ok),
	     LD(s->reloads_failed));
	addf(b, "\"store\":{\"kind\":\"%s\",\"errors\":%llu,\"keys\":%lld,\"slots\":%lld,\"evictions\":%lld,\"evictions_limiting\":%lld,\"full\":%lld",
	     st->kind, LD(s->store_errors), (long long)st->keys, (long long)st->slots,
	     (long long)st->evictions, (long long)st->evictions_limiting,
	     (long long)st->full);
	if (st->up >= 0)
		addf(b, ",\"up\":%lld,\"down_switches\":%lld,\"up_switches\":%lld,\"fallback\":%lld,\"cache_denied\":%lld",
		     (long long)st->up, (long long)st->down_switches,
		     (long long)st->up_switches, (long long)st->fallback,
		     (long long)st->cache_denied);
	respond_buf_add(b, "},", 2);
	respond_buf_add(b, "\"upstreams\":[", 13);
	for (size_t i = 0; i < nups; i++) {
		respond_buf_add(b, i ? ",{\"upstream\":\"" : "{\"upstream\":\"", i ? 14 : 13);
		add_escaped(b, ups[i].name);
		addf(b, "\",\"connects\":%llu,\"reuses\":%llu,\"failures\":%llu}",
		     (unsigned long long)ups[i].connects,
		     (unsigned long long)ups[i].reuses,
		     (unsigned long long)ups[i].failures);
	}
	respond_buf_add(b, "],", 2);
	respond_buf_add(b, "\"rules\":[", 9);
	for (size_t i = 0; i < sr->n; i++) {
		const struct stats_rule *r = &sr->r[i];
		respond_buf_add(b, i ? ",{\"rule\":\"" : "{\"rule\":\"", i ? 10 : 9);
		add_escaped(b, r->name);
		respond_buf_add(b, "\",\"file\":\"", 10);
		add_escaped(b, r->file);
		addf(b, "\",\"line\":%u,\"allowed\":%llu,\"denied\":%llu}", r->line,
		     LD(r->allowed), LD(r->denied));
	}
	respond_buf_add(b, "]}\n", 3);
}

static void
metric(struct respond_buf *b, const char *name, const char *type,
       const char *help)
{
	addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One counter per upstream: which is 0 connects, 1 reuses, 2 failures. */
static void
upstream_series(struct respond_buf *b, const char *name,
		const struct stats_upstream *ups, size_t nups, int which)
{
	for (size_t i = 0; i < nups; i++) {
		uint64_t v = which == 0 ? ups[i].connects :
			     which == 1 ? ups[i].reuses : ups[i].failures;
		addf(b, "%s{upstream=\"", name);
		add_escaped(b, ups[i].name);
		addf(b, "\"} %llu\n", (unsigned long long)v);
	}
}

static void
render_prometheus(struct respond_buf *b, const struct stats *s,
		  const struct stats_rules *sr, const struct stats_store *st,
		  const struct stats_upstream *ups, size_t nups,
		  int64_t now_ms, long pid)
{
	metric(b, "rategate_info", "gauge", "This rategate process.");
	addf(b, "rategate_info{version=\"%s\",pid=\"%ld\",store=\"%s\"} 1\n",
	     PACKAGE_VERSION, pid, st->kind);
	metric(b, "rategate_uptime_seconds", "gauge", "Seconds since this process started.");
	addf(b, "rategate_uptime_seconds %lld\n", (long long)((now_ms - s->started_ms) / 1000));
	metric(b, "rategate_requests_total", "counter", "Requests decided by this process, by result.");
	addf(b, "rategate_requests_total{result=\"allowed\"} %llu\n", LD(s->allowed));
	addf(b, "rategate_requests_total{result=\"denied\"} %llu\n",
	     (unsigned long long)denied_total(s));
	metric(b, "rategate_dry_run_denied_total", "counter", "Allowed requests a dry-run limit would have denied.");
	addf(b, "rategate_dry_run_denied_total %llu\n", LD(s->dry_run_denied));
	metric(b, "rategate_denials_total", "counter", "Denied requests, by reason.");
	for (int i = 0; i < STATS_REASONS; i++)
		addf(b, "rategate_denials_total{reason=\"%s\"} %llu\n", reason_names[i],
		     LD(s->denied[i]));
	metric(b, "rategate_rule_requests_total", "counter", "Requests per rule, by result.");
	for (size_t i = 0; i < sr->n; i++) {
		const struct stats_rule *r = &sr->r[i];
		for (int d = 0; d < 2; d++) {
			respond_buf_add(b, "rategate_rule_requests_total{rule=\"", 35);
			add_escaped(b, r->name);
			respond_buf_add(b, "\",file=\"", 8);
			add_escaped(b, r->file);
			addf(b, "\",line=\"%u\",result=\"%s\"} %llu\n", r->line,
			     d ? "denied" : "allowed", d ? LD(r->denied) : LD(r->allowed));
		}
	}
	metric(b, "rategate_inflight", "gauge", "Requests now with the application (responder mode).");
	addf(b, "rategate_inflight %lld\n", (long long)atomic_load(&s->inflight));
	metric(b, "rategate_upstream_errors_total", "counter", "Responses that failed at the application (502 or cut short).");
	addf(b, "rategate_upstream_errors_total %llu\n", LD(s->upstream_errors));
	if (nups > 0) {
		metric(b, "rategate_upstream_connects_total", "counter", "Connections opened to a FastCGI application.");
		upstream_series(b, "rategate_upstream_connects_total", ups, nups, 0);
		metric(b, "rategate_upstream_reuses_total", "counter", "Requests sent on a kept connection to a FastCGI application (upstream-keepalive).");
		upstream_series(b, "rategate_upstream_reuses_total", ups, nups, 1);
		metric(b, "rategate_upstream_failures_total", "counter", "Requests that failed at a FastCGI application (connection refused or closed, timeout, bad output).");
		upstream_series(b, "rategate_upstream_failures_total", ups, nups, 2);
	}
	metric(b, "rategate_client_timeouts_total", "counter", "Connections and requests given up after client-timeout without progress from the web server.");
	addf(b, "rategate_client_timeouts_total %llu\n", LD(s->client_timeouts));
	metric(b, "rategate_proxy_header_untrusted_total", "counter", "Requests whose proxy header was not trusted (an entry from a trusted hop that is not an address, or the header in several params behind lighttpd or Apache): the client counted as the nearest trusted hop.");
	addf(b, "rategate_proxy_header_untrusted_total %llu\n", LD(s->proxy_header_untrusted));
	metric(b, "rategate_store_errors_total", "counter", "Store failures.");
	addf(b, "rategate_store_errors_total %llu\n", LD(s->store_errors));
	if (st->keys >= 0) {
		metric(b, "rategate_store_keys", "gauge", "Distinct keys in the store.");
		addf(b, "rategate_store_keys %lld\n", (long long)st->keys);
	}
	if (st->slots >= 0) {
		metric(b, "rategate_store_slots", "gauge", "Keys the store can hold.");
		addf(b, "rategate_store_slots %lld\n", (long long)st->slots);
	}
	if (st->evictions >= 0) {
		metric(b, "rategate_store_evictions_total", "counter", "Live keys not limiting a client evicted because the store was full.");
		addf(b, "rategate_store_evictions_total %lld\n", (long long)st->evictions);
	}
	if (st->evictions_limiting >= 0) {
		metric(b, "rategate_store_evictions_limiting_total", "counter", "Keys of clients being limited evicted because all their candidate entries were: bans lifted early.");
		addf(b, "rategate_store_evictions_limiting_total %lld\n",
		     (long long)st->evictions_limiting);
	}
	if (st->full >= 0) {
		metric(b, "rategate_store_full_total", "counter", "Requests refused because the store was full.");
		addf(b, "rategate_store_full_total %lld\n", (long long)st->full);
	}
	if (st->up >= 0) {
		metric(b, "rategate_redis_up", "gauge", "1 while Redis answers, 0 while it does not.");
		addf(b, "rategate_redis_up %lld\n", (long long)st->up);
		metric(b, "rategate_redis_switches_total", "counter", "Redis going down and coming back, as this process saw it.");
		addf(b, "rategate_redis_switches_total{to=\"down\"} %lld\n", (long long)st->down_switches);
		addf(b, "rategate_redis_switches_total{to=\"up\"} %lld\n", (long long)st->up_switches);
		metric(b, "rategate_redis_fallback_total", "counter", "Decisions made on the fallback store while Redis was down.");
		addf(b, "rategate_redis_fallback_total %lld\n", (long long)st->fallback);
		metric(b, "rategate_redis_cache_denied_total", "counter", "Requests denied from the local over-limit cache without asking Redis.");
		addf(b, "rategate_redis_cache_denied_total %lld\n", (long long)st->cache_denied);
	}
	metric(b, "rategate_reloads_total", "counter", "Rule reloads (SIGHUP), by result.");
	addf(b, "rategate_reloads_total{result=\"ok\"} %llu\n", LD(s->reloads_ok));
	addf(b, "rategate_reloads_total{result=\"failed\"} %llu\n", LD(s->reloads_failed));
}

void
stats_render(struct respond_buf *b, enum stats_format f,
	     const struct stats *s, const struct stats_rules *sr,
	     const struct stats_store *st, const struct stats_upstream *ups,
	     size_t nups, int64_t now_ms, long pid)
{
	struct respond_buf body;

	respond_buf_init(&body);
	if (f == STATS_PROMETHEUS)
		render_prometheus(&body, s, sr, st, ups, nups, now_ms, pid);
	else
		render_json(&body, s, sr, st, ups, nups, now_ms, pid);
	respond_buf_reset(b);
	addf(b, "Status: 200 OK\r\nContent-Type: %s\r\nCache-Control: no-store\r\nContent-Length: %zu\r\n\r\n",
	     f == STATS_PROMETHEUS ? "text/plain; version=0.0.4; charset=utf-8"
				   : "application/json",
	     body.len);
	respond_buf_add(b, body.data, body.len);
	respond_buf_free(&body);
}
