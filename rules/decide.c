/*
 * decide.c - one request in, one all-or-nothing decision out.
 *
 * rl_decide normalises the path, finds the rule, resolves the client and its
 * key, gathers the counters that apply (the rule's limits; the default
 * limits, per path, when no rule matched or the rule says defaults=add; the
 * application limits, one budget per client across all paths), and asks the
 * store to apply them as one atomic batch: either every counter takes the
 * hit or none does.
 *
 * Store keys read "PREFIX:SCOPE:CLIENT:LIMIT", e.g.
 *   rg:r/login:addr=192.0.2.7:5/60000/fw        (a rule, scope = pattern)
 *   rg:r/auth@POST:h.x-api-key=k1:10/3600000/gcra (scope=auth, per-method)
 *   rg:d/about:addr=192.0.2.7:50/3600000/fw      (defaults: per path)
 *   rg:a:addr=192.0.2.7:10000/3600000/fw         (application)
 *   rg:r/upload:addr=192.0.2.7:bw/10485760/60000/fw (bandwidth: body bytes)
 * The limit part holds count, period in ms and the strategy, so editing a
 * limit starts a fresh counter instead of misreading the old state; the
 * "bw/" of bandwidth limits keeps body bytes and request counts apart.
 *
 * Before anything is counted, a body above max-body ends the decision
 * (RL_TOO_LARGE: a 413 costs no budget).  A deduct-when= rule's request
 * limits go into the batch as probes (checked, never consumed) and are
 * counted by rl_after_response once the response status is known.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_OPS (4 * RL_MAX_LIMITS)   /* rule, bandwidth, defaults,
					 application */
#define SCOPE_MAX 256           /* longer scopes (default-limit paths) are
				   hashed */
#define PROXY_VALUES_MAX 16     /* proxy header lines looked at (the last) */

struct opmeta {
	const struct rl_limit *limit;
	enum rl_origin origin;
	int dry;
	int bw;                 /* a bandwidth limit */
};

/* How a group of limits is added to a batch. */
struct group {
	enum rl_strategy strategy;
	uint64_t burst;
	uint64_t cost;          /* request limits: hits per request */
	uint64_t body;          /* bandwidth limits: body bytes (cost is
				   ceil(body / unit) per limit); 0 otherwise */
	enum rl_origin origin;
	int dry;
	int probe;
};

struct batch {
	struct rl_store_op ops[MAX_OPS];
	struct opmeta meta[MAX_OPS];
	size_t n;
	char keys[MAX_OPS][RL_STORE_KEY_MAX];
};

int64_t
rl_retry_seconds(int64_t retry_ms)
{
	/* Rounded up without adding 999 first: a wait saturated at
	 * INT64_MAX ms (a gcra bucket far larger than its rate) must stay
	 * the longest wait, not wrap to a negative one and then to 1. */
	if (retry_ms < 1)
		return 1;
	return retry_ms / 1000 + (retry_ms % 1000 != 0);
}

/* The hot path builds keys by hand (memcpy, rl_put): snprintf costs more
 * than the rest of a decision.  What does not depend on the request (the
 * prefix and a rule's escaped scope, each limit's id) was built at load. */

#define KEY_BASE_CAP (RL_STORE_KEY_MAX - 48)   /* room for the limit part */

/* Append a scope to k[*pos..cap): escaped, or '#' and its hash when longer
 * than SCOPE_MAX.  Returns 0, or -1 when it does not fit. */
static int
put_scope(char *k, size_t cap, size_t *pos, const char *scope,
	  size_t scope_len)
{
	if (scope_len > SCOPE_MAX) {
		char hb[17];
		rl_hash_text(scope, scope_len, hb);
		return rl_put(k, cap, pos, hb, 17);
	}
	return rl_key_escape(k, cap, pos, scope, scope_len);
}

/* One head, "PREFIX:KIND" and the escaped scope, in arena memory.  A head
 * too long for any key gets the length KEY_BASE_CAP, which key_base
 * refuses. */
static int
head_make(struct rl_arena *a, struct rl_key_head *h, const char *prefix,
	  char kind, const char *scope, size_t scope_len)
{
	char buf[KEY_BASE_CAP];
	char k[2] = { ':', kind };
	size_t pos = 0;

	if (rl_put(buf, sizeof(buf), &pos, prefix, strlen(prefix)) ||
	    rl_put(buf, sizeof(buf), &pos, k, 2) ||
	    put_scope(buf, sizeof(buf), &pos, scope, scope_len)) {
		h->text = "";
		h->len = KEY_BASE_CAP;
		return 0;
	}
	h->text = rl_arena_strndup(a, buf, pos);
	h->len = pos;
	return h->text != NULL ? 0 : -1;
}

int
rl_ruleset_key_heads(struct rl_ruleset *rs)
{
	const char *prefix = rs->settings.key_prefix;

	rs->rule_heads = rl_arena_alloc(&rs->arena, (rs->nrules + 1) *
					sizeof(*rs->rule_heads));
	if (rs->rule_heads == NULL ||
	    head_make(&rs->arena, &rs->default_head, prefix, 'd', "", 0) ||
	    head_make(&rs->arena, &rs->app_head, prefix, 'a', "", 0))
		return -1;
	for (size_t i = 0; i < rs->nrules; i++) {
		const struct rl_rule *r = rs->rules[i];
		if (head_make(&rs->arena, &rs->rule_heads[r->index], prefix,
			      'r', r->scope, strlen(r->scope)))
			return -1;
	}
	return 0;
}

/* "PREFIX:KIND SCOPE[@METHOD]:CLIENT:" into k: the head ("PREFIX:KIND" and
 * a rule's scope) comes ready, scope is what only the request knows (the
 * path of default limits; empty otherwise).  Returns its length, or 0
 * when it does not fit KEY_BASE_CAP. */
static size_t
key_base(char *k, const struct rl_key_head *head, const char *scope,
	 size_t scope_len, const char *method, size_t method_len,
	 const char *client, size_t client_len)
{
	size_t pos = head->len;

	if (pos + 1 > KEY_BASE_CAP)
		return 0;
	memcpy(k, head->text, pos);
	if (scope_len > 0 &&
	    put_scope(k, KEY_BASE_CAP, &pos, scope, scope_len))
		return 0;
	if (method != NULL &&
	    (rl_put(k, KEY_BASE_CAP, &pos, "@", 1) ||
	     rl_key_escape(k, KEY_BASE_CAP, &pos, method, method_len)))
		return 0;
	if (pos + client_len + 3 > KEY_BASE_CAP)
		return 0;
	k[pos++] = ':';
	memcpy(k + pos, client, client_len);
	pos += client_len;
	k[pos++] = ':';
	k[pos] = '\0';
	return pos;
}

/* One op per limit, its key base[0..base_len) and the limit's id.  base
 * may be the key of the batch's next op itself (key_base writes there). */
static int
add_group(struct batch *b, const char *base, size_t base_len,
	  const struct rl_limit *limits, size_t n, const struct group *g)
{
	for (size_t i = 0; i < n; i++) {
		struct rl_store_op *op = &b->ops[b->n];
		struct opmeta *m = &b->meta[b->n];
		const struct rl_limit *l = &limits[i];
		char *k = b->keys[b->n];

		if (base_len + l->id_len + 1 > RL_STORE_KEY_MAX)
			return -1;
		if (k != base)
			memcpy(k, base, base_len);
		memcpy(k + base_len, l->id, l->id_len + 1);
		op->key = k;
		op->key_len = base_len + l->id_len;
		op->step.strategy = g->strategy;
		op->step.count = l->count;
		op->step.period_ms = l->period_ms;
		if (l->unit) {
			/* the bucket of a gcra bandwidth limit is the limit:
			 * burst= counts requests */
			op->step.burst = 0;
			op->step.cost = g->body / l->unit +
					(g->body % l->unit != 0);
		} else {
			op->step.burst = g->burst;
			op->step.cost = g->cost;
		}
		op->probe = g->probe;
		memset(&op->v, 0, sizeof(op->v));
		m->limit = l;
		m->origin = g->origin;
		m->dry = g->dry;
		m->bw = l->unit != 0;
		b->n++;
	}
	return 0;
}

static void
fill(struct rl_decision *d, const struct batch *b, size_t i)
{
	d->limit = b->meta[i].limit;
	d->origin = b->meta[i].origin;
	d->bandwidth = b->meta[i].bw;
	d->cost = b->ops[i].step.cost;
	d->remaining = b->ops[i].v.remaining;
	d->reset_ms = b->ops[i].v.reset_ms;
	d->retry_ms = b->ops[i].v.allowed ? 0 : b->ops[i].v.retry_ms;
	if (!b->ops[i].v.allowed && d->retry_ms < 1)
		d->retry_ms = 1;
}

/* The op deciding a denial: the longest wait among denied ops whose dry
 * flag is dry.  -1 when none. */
static long
longest_wait(const struct batch *b, int dry)
{
	long best = -1;

	for (size_t i = 0; i < b->n; i++) {
		if (b->ops[i].v.allowed || b->meta[i].dry != dry)
			continue;
		if (best < 0 || b->ops[i].v.retry_ms > b->ops[best].v.retry_ms)
			best = (long)i;
	}
	return best;
}

/* For an allowed request: the fewest hits remaining, then the latest
 * reset.  Bytes and requests do not compare: bandwidth limits are only
 * reported when the batch has nothing else. */
static long
tightest(const struct batch *b)
{
	long best = -1;
	int only_bw = 1;

	for (size_t i = 0; i < b->n; i++)
		only_bw &= b->meta[i].bw;
	for (size_t i = 0; i < b->n; i++) {
		const struct rl_verdict *v = &b->ops[i].v;
		if (b->meta[i].bw && !only_bw)
			continue;
		if (best < 0 || v->remaining < b->ops[best].v.remaining ||
		    (v->remaining == b->ops[best].v.remaining &&
		     v->reset_ms > b->ops[best].v.reset_ms))
			best = (long)i;
	}
	return best;
}

static enum rl_outcome
store_fail(struct rl_decision *d, const struct rl_store *st,
	   const struct rl_diag *err)
{
	snprintf(d->error, sizeof(d->error), "store %s: %s", st->ops->name,
		 err->msg);
	d->outcome = RL_STORE_ERROR;
	return d->outcome;
}

static int
finish(struct rl_decision *d, enum rl_outcome o)
{
	d->outcome = o;
	return (int)o;
}

/* Who is asking, and under which rule: everything a decision needs before
 * it touches the store.  path and rkey point into the request or into the
 * buffers here. */
struct who {
	char pbuf[RL_PATH_MAX + 1];     /* the path when normalising changed it */
	const char *path;
	size_t path_len;
	const char *method;             /* upper-cased into mbuf when it fits */
	size_t method_len;
	/* What per-method counts under: the method, but HEAD as GET (servers
	 * answer HEAD by running GET's handler) and every method outside
	 * RL_METHOD_* as "OTHER" (a client picks its method: Apache and
	 * nginx pass any token on, so one budget per made-up method would
	 * be unbounded). */
	const char *cmethod;
	size_t cmethod_len;
	char mbuf[32];
	const struct rl_rule *rule;
	char addr_text[64];
	size_t addr_len;
	char gkey[RL_STORE_KEY_MAX / 2], rbuf[RL_STORE_KEY_MAX / 2];
	const char *rkey;               /* gkey or rbuf */
	size_t rkey_len, gkey_len;
	int have_g;
	int have_addr;                  /* addr_text is set */
	const char *key_text;           /* the client key for d->key, or NULL */
	size_t key_len;
};

/* For key_text "-": as long as d->key, so that names() can copy a fixed
 * size from any key text. */
static const char no_key[RL_DECISION_KEY_MAX] = "-";

/* A text of len bytes at src, which has at least cap readable bytes,
 * into dst[cap], truncated.  All cap bytes are copied, a constant size
 * that compiles to a few vector moves (a variable-size copy became a
 * `rep movsq`, slow to start); those past the NUL are never read. */
static void
set_fixed(char *dst, size_t cap, const char *src, size_t len)
{
	memcpy(dst, src, cap);
	dst[len < cap ? len : cap - 1] = '\0';
}

/* d->client and d->key from W, once the decision is made.  Copied last,
 * not as identify() finds them: the texts were just written a byte at a
 * time, and reading them back at once stalls the CPU until those stores
 * are done (~5 ns a copy). */
static void
names(struct rl_decision *d, const struct who *w)
{
	_Static_assert(sizeof(w->addr_text) == sizeof(d->client),
		       "client text size");
	_Static_assert(sizeof(w->gkey) >= sizeof(d->key) &&
		       sizeof(w->rbuf) >= sizeof(d->key), "key text size");
	if (w->have_addr && d->addr_source != RL_ADDR_NONE)
		set_fixed(d->client, sizeof(d->client), w->addr_text,
			  w->addr_len);
	if (w->key_text != NULL)
		set_fixed(d->key, sizeof(d->key), w->key_text, w->key_len);
}

/* Every field of d as a decision starts (what zeroing it and setting the
 * defaults gave; the text fields only need their terminator). */
static void
decision_init(struct rl_decision *d, const struct rl_settings *s)
{
	d->outcome = RL_ALLOW;
	d->would_deny = 0;
	d->exempt = 0;
	d->rule = NULL;
	d->upstream_rule = NULL;
	d->limit = NULL;
	d->origin = RL_FROM_RULE;
	d->remaining = 0;
	d->reset_ms = 0;
	d->retry_ms = 0;
	d->cost = 1;
	d->bandwidth = 0;
	d->max_body = 0;
	d->addr_source = RL_ADDR_REMOTE;
	d->client[0] = '-';
	d->client[1] = '\0';
	d->key[0] = '\0';
	d->message = s->message;
	d->error[0] = '\0';
}

/* The client key when the configured one is missing: the key "addr",
 * spelled as rl_key_render_addr spells it (an IPv6 address escaped), so
 * that a rule whose key is missing and a rule keyed by address that share
 * a scope count one client once.  The callers check that there is an
 * address; it always fits. */
static size_t
addr_key(char *buf, size_t cap, const struct who *w)
{
	size_t len = 0;

	if (rl_key_render_addr(w->addr_text, w->addr_len, buf, cap, &len))
		return 0;
	return len;
}

const char *
rl_origin_name(enum rl_origin o)
{
	static const char *const names[] = { "rule", "default", "application" };

	return (unsigned)o < sizeof(names) / sizeof(names[0]) ? names[o] : "unknown";
}

/* The request's first parameter named name, or NULL. */
static const struct rl_param *
param_of(const struct rl_request *req, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < req->nparams; i++)
		if (req->params[i].name_len == len &&
		    memcmp(req->params[i].name, name, len) == 0)
			return &req->params[i];
	return NULL;
}

/* The proxy header's values of req that the client address is read from:
 * the last PROXY_VALUES_MAX params of that name, in arrival order, in
 * vals/lens (*nv of them).  Returns 1 when two or more came behind a
 * server that joins repeated header lines: one is a name variant a client
 * wrote (below), so none is to be read. */
static int
proxy_values(const struct rl_settings *s, const struct rl_request *req,
	     const char **vals, size_t *lens, size_t *nv)
{
	size_t seen = 0;

	*nv = 0;
	if (s->proxies.hops == 0 && s->proxies.nnets == 0)
		return 0;
	const char *hname = s->proxies.forwarded ? "HTTP_FORWARDED" :
						   "HTTP_X_FORWARDED_FOR";
	size_t hlen = strlen(hname);

	for (size_t i = 0; i < req->nparams; i++) {
		const struct rl_param *p = &req->params[i];
		if (p->name_len != hlen || memcmp(p->name, hname, hlen) != 0)
			continue;
		/* keep the last PROXY_VALUES_MAX: the right end matters */
		vals[seen % PROXY_VALUES_MAX] = p->value;
		lens[seen % PROXY_VALUES_MAX] = p->value_len;
		seen++;
	}
	if (seen > PROXY_VALUES_MAX) {
		const char *tv[PROXY_VALUES_MAX];
		size_t tl[PROXY_VALUES_MAX];
		for (size_t i = 0; i < PROXY_VALUES_MAX; i++) {
			tv[i] = vals[(seen + i) % PROXY_VALUES_MAX];
			tl[i] = lens[(seen + i) % PROXY_VALUES_MAX];
		}
		memcpy(vals, tv, sizeof(tv));
		memcpy(lens, tl, sizeof(tl));
	}
	*nv = seen > PROXY_VALUES_MAX ? PROXY_VALUES_MAX : seen;
	/* Two or more proxy-header params: lighttpd and Apache join
	 * repeated header lines into one value, so a second one is a name
	 * variant (X_Forwarded_For, which lighttpd, and nginx with
	 * underscores_in_headers, pass under the same CGI name), which a
	 * client wrote: a trusted proxy appends to the real header only, and
	 * which param holds its entry cannot be told.  The header is then
	 * not trusted and the client counts as the nearest trusted hop
	 * (REMOTE_ADDR), as for garbage.  nginx 1.22 passes repeated lines
	 * as they came (a proxy that adds a line of its own, HAProxy's
	 * "option forwardfor"): read in order there, as documented, unless
	 * its SERVER_SOFTWARE param was changed. */
	if (seen > 1) {
		const struct rl_param *ss = param_of(req, "SERVER_SOFTWARE");
		return ss == NULL || ss->value_len < 6 ||
		       memcmp(ss->value, "nginx/", 6) != 0;
	}
	return 0;
}

/* src, the source of the client read without the proxy header's values
 * (variants: they came as name variants), or RL_ADDR_VARIANTS when the
 * header would have been read: not for a client that reaches us
 * directly, outside the trusted networks (asked with the values, as
 * nginx would be; a rare case). */
static enum rl_addr_source
variants_source(const struct rl_settings *s, const struct rl_request *req,
		const char *const *vals, const size_t *lens, size_t nv,
		int variants, enum rl_addr_source src)
{
	struct rl_addr t;

	if (variants && src == RL_ADDR_REMOTE &&
	    rl_client_addr(&s->proxies, req->remote_addr,
			   req->remote_addr ? req->remote_addr_len : 0, vals,
			   lens, nv, &t) != RL_ADDR_REMOTE)
		return RL_ADDR_VARIANTS;
	return src;
}

enum rl_addr_source
rl_request_client(const struct rl_ruleset *rs, const struct rl_request *req,
		  struct rl_addr *out)
{
	const struct rl_settings *s = &rs->settings;
	const char *vals[PROXY_VALUES_MAX];
	size_t lens[PROXY_VALUES_MAX], nv;
	int variants = proxy_values(s, req, vals, lens, &nv);
	enum rl_addr_source src =
		rl_client_addr(&s->proxies, req->remote_addr,
			       req->remote_addr ? req->remote_addr_len : 0,
			       vals, lens, variants ? 0 : nv, out);

	return variants_source(s, req, vals, lens, nv, variants, src);
}

/* Fill w and the identity fields of d.  Returns -1 to go on deciding, or
 * the final outcome (disabled, exempt, bad request, no usable key). */
static int
identify(const struct rl_ruleset *rs, const struct rl_request *req,
	 struct rl_decision *d, struct who *w)
{
	const struct rl_settings *s = &rs->settings;
	struct rl_diag err;

	decision_init(d, s);
	w->have_addr = 0;
	w->key_text = NULL;
	if (!s->enabled)
		return finish(d, RL_ALLOW);
	/* The client address, first: every answer is logged with it, a bad
	 * path's, a 413 and an exempt one too. */
	const char *vals[PROXY_VALUES_MAX];
	size_t lens[PROXY_VALUES_MAX], nv;
	int variants = proxy_values(s, req, vals, lens, &nv);

	d->addr_source = rl_client_addr_text(&s->proxies, req->remote_addr,
					     req->remote_addr ?
					     req->remote_addr_len : 0,
					     vals, lens, variants ? 0 : nv,
					     s->ipv4_prefix,
					     s->ipv6_prefix, w->addr_text,
					     sizeof(w->addr_text), &w->addr_len);
	d->addr_source = variants_source(s, req, vals, lens, nv, variants,
					 d->addr_source);
	w->have_addr = 1;
	/* exempt-clients: the resolved address itself (not its ipv4-prefix
	 * or ipv6-prefix group), asked for only by rule sets that have the
	 * list; a client it exempts is still checked for a bad path and for
	 * max-body below, as on an exempt path.  Not the nearest trusted hop
	 * a proxy header that cannot be trusted falls back to (VARIANTS,
	 * INVALID): any client can cause that, and the hop is often the
	 * proxy, which may well lie in an exempt network. */
	int exempt_client = 0;
	if (s->nexempt_clients > 0 && d->addr_source != RL_ADDR_NONE &&
	    d->addr_source != RL_ADDR_VARIANTS &&
	    d->addr_source != RL_ADDR_INVALID) {
		struct rl_addr a;
		if (rl_client_addr(&s->proxies, req->remote_addr,
				   req->remote_addr ? req->remote_addr_len : 0,
				   vals, lens, variants ? 0 : nv, &a) !=
		    RL_ADDR_NONE)
			exempt_client = rl_cidrs_contain(s->exempt_clients,
							 s->nexempt_clients, &a);
	}

	if (req->path == NULL || req->path_len > RL_PATH_MAX) {
		snprintf(d->error, sizeof(d->error), "request path missing or longer than %d bytes",
			 RL_PATH_MAX);
		return finish(d, RL_BAD_REQUEST);
	}
	if (rl_path_view(req->path, req->path_len, s->case_insensitive,
			 w->pbuf, &w->path, &w->path_len, &err)) {
		snprintf(d->error, sizeof(d->error), "bad request path: %s",
			 err.msg);
		return finish(d, RL_BAD_REQUEST);
	}
	/* Methods compared ignoring ASCII case: HTTP calls them
	 * case-sensitive, but Apache passes "post" on as it came and many
	 * applications upper-case it, so "post" must not escape a
	 * methods=POST rule nor count apart from POST per-method. */
	w->method = req->method ? req->method : "GET";
	w->method_len = strlen(w->method);
	if (w->method_len < sizeof(w->mbuf)) {
		int lower = 0;
		for (size_t i = 0; i < w->method_len; i++) {
			char c = w->method[i];
			lower |= c >= 'a' && c <= 'z';
			w->mbuf[i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
		}
		if (lower) {
			w->mbuf[w->method_len] = '\0';
			w->method = w->mbuf;
		}
	}
	struct rl_match m;
	unsigned mbit = rl_method_bit(w->method, w->method_len);

	w->cmethod = w->method;
	w->cmethod_len = w->method_len;
	if (mbit == RL_METHOD_HEAD) {
		w->cmethod = "GET";
		w->cmethod_len = 3;
	} else if (mbit == RL_METHOD_OTHER) {
		w->cmethod = "OTHER";
		w->cmethod_len = 5;
	}
	rl_ruleset_match(rs, w->path, w->path_len, mbit, &m);
	const struct rl_rule *rule = w->rule = m.rule;

	d->rule = rule;
	d->upstream_rule = m.upstream;
	if (rule && rule->message)
		d->message = rule->message;

	/* The body: a 413 before anything is counted, exempt or not. */
	uint64_t max_body = m.body ? m.body->max_body : s->max_body;
	int dry = s->dry_run || (rule && rule->dry_run);

	if (max_body > 0 && req->body_bytes > max_body) {
		snprintf(d->error, sizeof(d->error), "request body of %llu bytes is above max-body %llu",
			 (unsigned long long)req->body_bytes,
			 (unsigned long long)max_body);
		if (!dry) {
			d->max_body = max_body;
			return finish(d, RL_TOO_LARGE);
		}
		d->would_deny = 1;
	} else if (!dry) {
		d->max_body = max_body;
	}
	if ((rule && rule->exempt) || exempt_client) {
		d->exempt = 1;
		return finish(d, RL_ALLOW);
	}

	/* Client keys: the rule's (its missing-key policy applies) and the
	 * global one for defaults and application limits. */
	const struct rl_key *gk = s->key;

	w->rkey = w->gkey;
	w->rkey_len = w->gkey_len = 0;
	w->have_g = 0;
	if (rl_key_render(gk, req, w->addr_text, w->addr_len, w->gkey,
			  sizeof(w->gkey), &w->gkey_len) == 0) {
		w->have_g = 1;
	} else if (w->addr_len > 0) {
		w->gkey_len = addr_key(w->gkey, sizeof(w->gkey), w);
		w->have_g = 1;
	}
	if (rule != NULL) {
		const struct rl_key *rk = rule->key ? rule->key : gk;
		if (rk == gk && w->have_g) {
			w->rkey_len = w->gkey_len;
		} else if (rl_key_render(rk, req, w->addr_text, w->addr_len,
					 w->rbuf, sizeof(w->rbuf),
					 &w->rkey_len) == 0) {
			w->rkey = w->rbuf;
		} else {
			if (rule->missing == RL_MISSING_DENY || w->addr_len == 0) {
				snprintf(d->error, sizeof(d->error),
					 "no usable key for \"%s\" (key=%s)",
					 rule->pattern.text, rk->text);
				return finish(d, RL_DENY_KEY);
			}
			w->rkey = w->rbuf;
			w->rkey_len = addr_key(w->rbuf, sizeof(w->rbuf), w);
		}
		w->key_text = w->rkey;
		w->key_len = w->rkey_len;
	} else if (w->have_g) {
		w->key_text = w->gkey;
		w->key_len = w->gkey_len;
	} else {
		w->key_text = no_key;
		w->key_len = 1;
	}
	return -1;
}

/* The length of path that the default limits count: all of it, but a
 * path that continues past a segment naming a file ("/page.php/a") is
 * that file's ("/page.php"), as web servers hand it to the file's script
 * (PATH_INFO) or serve it as the file.  Otherwise each made-up suffix was
 * a fresh default budget for one script (found by a review).  "Names a
 * file" is what gives a rule its implied subtree. */
static size_t
default_path_len(const char *path, size_t len)
{
	size_t seg = 1;         /* start of the current segment */

	for (size_t i = 1; i < len; i++) {
		if (path[i] != '/')
			continue;
		/* segment [seg, i) is followed by more */
		if (rl_segment_names_file(path + seg, i - seg, 0))
			return i;
		seg = i + 1;
	}
	return len;
}

/* rl_decide() but for d->client and d->key, which are left to names(). */
static enum rl_outcome
decide(const struct rl_ruleset *rs, struct rl_store *st,
       const struct rl_request *req, int64_t now_ms, enum rl_mode mode,
       struct rl_decision *d, struct who *w)
{
	const struct rl_settings *s = &rs->settings;
	struct batch b;
	struct rl_diag err;
	int o = identify(rs, req, d, w);

	if (o >= 0)
		return (enum rl_outcome)o;
	const struct rl_rule *rule = w->rule;

	/* The counters.  Each group's key base is built in the key of the
	 * batch's next op (b.n is at most 3 * RL_MAX_LIMITS < MAX_OPS then). */
	size_t blen;
	uint64_t cost = req->cost ? req->cost : rule ? rule->cost : 1;
	int need_g = (rule == NULL && s->ndefaults > 0) ||
		     (rule != NULL && rule->defaults_add && s->ndefaults > 0) ||
		     s->napplication > 0;

	d->cost = cost;
	if (need_g && !w->have_g) {
		snprintf(d->error, sizeof(d->error), "no client address (REMOTE_ADDR missing or invalid)");
		return finish(d, RL_DENY_KEY);
	}
	b.n = 0;
	if (rule != NULL) {
		struct group g = {
			.strategy = rule->strategy, .burst = rule->burst,
			.cost = cost, .origin = RL_FROM_RULE,
			.dry = rule->dry_run || s->dry_run,
			.probe = rule->deduct,
		};
		char *base = b.keys[b.n];
		blen = key_base(base, &rs->rule_heads[rule->index], "", 0,
				rule->per_method ? w->cmethod : NULL,
				w->cmethod_len, w->rkey, w->rkey_len);
		if (blen == 0 ||
		    add_group(&b, base, blen, rule->limits, rule->nlimits, &g))
			goto too_long;
		g.probe = 0;
		g.body = req->body_bytes;
		if (req->body_bytes == 0 && req->body_unknown) {
			/* its bytes are counted after the response
			 * (rl_after_response); checked now, so that chunked
			 * bodies are no way around the limit */
			g.body = 1;
			g.probe = 1;
		}
		if (g.body > 0 &&
		    add_group(&b, base, blen, rule->bandwidth, rule->nbandwidth,
			      &g))
			goto too_long;
	}
	if ((rule == NULL || rule->defaults_add) && s->ndefaults > 0) {
		struct group g = {
			.strategy = s->strategy, .burst = s->burst,
			.cost = cost, .origin = RL_FROM_DEFAULT,
			.dry = s->dry_run,
		};
		char *base = b.keys[b.n];
		blen = key_base(base, &rs->default_head, w->path,
				default_path_len(w->path, w->path_len),
				NULL, 0, w->gkey, w->gkey_len);
		if (blen == 0 ||
		    add_group(&b, base, blen, s->defaults, s->ndefaults, &g))
			goto too_long;
	}
	if (s->napplication > 0) {
		struct group g = {
			.strategy = s->strategy, .burst = s->burst,
			.cost = cost, .origin = RL_FROM_APPLICATION,
			.dry = s->dry_run,
		};
		char *base = b.keys[b.n];
		blen = key_base(base, &rs->app_head, "", 0, NULL, 0, w->gkey,
				w->gkey_len);
		if (blen == 0 ||
		    add_group(&b, base, blen, s->application, s->napplication,
			      &g))
			goto too_long;
	}
	if (b.n == 0)
		return finish(d, RL_ALLOW);

	if (st->ops->apply(st->impl, b.ops, b.n, mode, now_ms, &err))
		return store_fail(d, st, &err);

	long deny = longest_wait(&b, 0);
	if (deny >= 0) {
		fill(d, &b, (size_t)deny);
		return finish(d, RL_DENY);
	}
	long dry = longest_wait(&b, 1);
	if (dry < 0) {
		fill(d, &b, (size_t)tightest(&b));
		return finish(d, RL_ALLOW);
	}
	/* Only dry-run limits denied: report what they would have said, and
	 * count the request on the limits that are enforced. */
	d->would_deny = 1;
	fill(d, &b, (size_t)dry);
	if (mode == RL_HIT) {
		struct batch *e = &b;
		size_t k = 0;
		for (size_t i = 0; i < e->n; i++) {
			if (e->meta[i].dry)
				continue;
			e->ops[k] = e->ops[i];
			e->meta[k] = e->meta[i];
			k++;
		}
		e->n = k;
		if (k > 0) {
			if (st->ops->apply(st->impl, e->ops, k, RL_HIT, now_ms, &err))
				return store_fail(d, st, &err);
			deny = longest_wait(e, 0);
			if (deny >= 0) {
				d->would_deny = 0;
				fill(d, e, (size_t)deny);
				return finish(d, RL_DENY);
			}
		}
	}
	return finish(d, RL_ALLOW);

too_long:
	snprintf(d->error, sizeof(d->error), "counter key longer than %d bytes",
		 RL_STORE_KEY_MAX);
	return finish(d, RL_BAD_REQUEST);
}

enum rl_outcome
rl_decide(const struct rl_ruleset *rs, struct rl_store *st,
	  const struct rl_request *req, int64_t now_ms, enum rl_mode mode,
	  struct rl_decision *d)
{
	struct who w;
	enum rl_outcome o = decide(rs, st, req, now_ms, mode, d, &w);

	names(d, &w);
	return o;
}

int
rl_rule_deducts(const struct rl_rule *r, int status)
{
	if (r == NULL || !r->deduct || status < 100 || status > 599)
		return 0;
	unsigned bit = (unsigned)status - 100;
	return (r->deduct_status[bit / 64] >> (bit % 64)) & 1;
}

/* A charge after the response: never refused.  When the counter cannot
 * take it all, it takes what is left, so the client is out of budget
 * until the counter recovers. */
static int
charge(struct rl_store *st, struct rl_store_op *op, int64_t now_ms,
       struct rl_diag *err)
{
	op->probe = 0;
	if (st->ops->apply(st->impl, op, 1, RL_HIT, now_ms, err))
		return -1;
	if (op->v.allowed || op->v.remaining == 0)
		return 0;
	op->step.cost = op->v.remaining;
	return st->ops->apply(st->impl, op, 1, RL_HIT, now_ms, err);
}

int
rl_after_response(const struct rl_ruleset *rs, struct rl_store *st,
		  const struct rl_request *req, int status,
		  uint64_t late_body_bytes, int64_t now_ms,
		  struct rl_diag *err)
{
	const struct rl_settings *s = &rs->settings;
	struct rl_decision d;
	struct batch b;
	struct who w;
	size_t blen;

	if (identify(rs, req, &d, &w) >= 0)
		return 0;       /* disabled, exempt, too large, no key... */
	const struct rl_rule *rule = w.rule;
	int deduct = rl_rule_deducts(rule, status);

	if (rule == NULL || (!deduct && (late_body_bytes == 0 ||
					 rule->nbandwidth == 0)))
		return 0;
	struct group g = {
		.strategy = rule->strategy, .burst = rule->burst,
		.cost = req->cost ? req->cost : rule->cost,
		.origin = RL_FROM_RULE, .dry = rule->dry_run || s->dry_run,
		.body = late_body_bytes,
	};
	char *base = b.keys[0];
	blen = key_base(base, &rs->rule_heads[rule->index], "", 0,
			rule->per_method ? w.cmethod : NULL, w.cmethod_len,
			w.rkey, w.rkey_len);
	b.n = 0;
	if (blen == 0)
		goto too_long;
	if (deduct && add_group(&b, base, blen, rule->limits, rule->nlimits,
				&g))
		goto too_long;
	if (late_body_bytes > 0 &&
	    add_group(&b, base, blen, rule->bandwidth, rule->nbandwidth, &g))
		goto too_long;
	for (size_t i = 0; i < b.n; i++)
		if (charge(st, &b.ops[i], now_ms, err))
			return -1;
	return 0;

too_long:
	snprintf(err->msg, sizeof(err->msg), "counter key longer than %d bytes",
		 RL_STORE_KEY_MAX);
	return -1;
}

enum rl_outcome
rl_inflight_begin(const struct rl_ruleset *rs, struct rl_store *st,
		  const struct rl_request *req, int64_t now_ms,
		  int64_t lease_ms, struct rl_lease *lease,
		  struct rl_decision *d)
{
	struct who w;
	struct rl_diag err;
	uint64_t held = 0;
	int o = identify(rs, req, d, &w);

	names(d, &w);
	lease->held = 0;
	lease->key_len = 0;
	if (o >= 0)
		return (enum rl_outcome)o;
	if (w.rule == NULL || w.rule->concurrency == 0)
		return (enum rl_outcome)finish(d, RL_ALLOW);
	size_t pos = key_base(lease->key, &rs->rule_heads[w.rule->index], "",
			      0, NULL, 0, w.rkey, w.rkey_len);
	char id[32];
	int idn = snprintf(id, sizeof(id), "inflight/%llu",
			   (unsigned long long)w.rule->concurrency);
	if (pos == 0 ||
	    rl_put(lease->key, sizeof(lease->key), &pos, id, (size_t)idn)) {
		snprintf(d->error, sizeof(d->error), "counter key longer than %d bytes",
			 RL_STORE_KEY_MAX);
		return (enum rl_outcome)finish(d, RL_BAD_REQUEST);
	}
	lease->key_len = pos;
	int r = st->ops->acquire(st->impl, lease->key, pos, w.rule->concurrency,
				 lease_ms, now_ms, &lease->id, &held, &err);
	if (r < 0)
		return store_fail(d, st, &err);
	d->remaining = held >= w.rule->concurrency ? 0 :
		       w.rule->concurrency - held;
	if (r == 0) {
		d->retry_ms = RL_INFLIGHT_RETRY_MS;
		snprintf(d->error, sizeof(d->error), "%llu requests already in flight",
			 (unsigned long long)w.rule->concurrency);
		/* dry-run (the rule's or everyone's): never denies, like
		 * every other limit; the would-be denial is reported and the
		 * request goes on without a slot */
		if (w.rule->dry_run || rs->settings.dry_run) {
			d->would_deny = 1;
			return (enum rl_outcome)finish(d, RL_ALLOW);
		}
		return (enum rl_outcome)finish(d, RL_DENY);
	}
	lease->held = 1;
	return (enum rl_outcome)finish(d, RL_ALLOW);
}

int
rl_inflight_end(struct rl_store *st, struct rl_lease *lease, int64_t now_ms,
		struct rl_diag *err)
{
	if (!lease->held)
		return 0;
	lease->held = 0;
	return st->ops->release(st->impl, lease->key, lease->key_len, lease->id,
				now_ms, err);
}
