/*
 * internal.h - what the rules library's modules share and nobody else sees:
 * the arena that owns a ruleset's memory, the ruleset itself, and the key
 * builder used by the decision engine.
 *
 * Ownership: everything reachable from a struct rl_ruleset (rules, limits,
 * patterns, strings) lives in its arena and is freed by rl_ruleset_free in
 * one call.
 */
#ifndef RULES_INTERNAL_H
#define RULES_INTERNAL_H

#include "rules.h"

struct rl_arena_block;

struct rl_arena {
	struct rl_arena_block *head;
	size_t bytes;           /* total allocated, for statistics */
};

/* Zeroed, 16-byte aligned memory owned by the arena; NULL when out of
 * memory. */
void *rl_arena_alloc(struct rl_arena *a, size_t n);
char *rl_arena_strndup(struct rl_arena *a, const char *s, size_t n);
void rl_arena_free(struct rl_arena *a);

/* The request-independent start of a counter key, built once at load by
 * rl_ruleset_key_heads (decide.c): "PREFIX:r" and a rule's escaped scope
 * (or '#' and its hash), "PREFIX:d", "PREFIX:a".  Arena memory. */
struct rl_key_head {
	const char *text;
	size_t len;
};

/* A wildcard pattern of the rule set: a rule's own, or the implicit
 * subtree (the pattern, then a double-star segment) of a rule that names
 * a file, such as "/report.cgi", since web servers hand "/report.cgi/x"
 * to report.cgi as PATH_INFO (parse.c, names_file). */
struct rl_glob {
	const struct rl_pattern *pattern;
	const struct rl_rule *rule;
	int implicit;
};

/* Does the path segment seg[0..len) name a file: an extension after its
 * last '.' (not its first byte) of 1 to 10 letters and digits (and '*'
 * when wild: a pattern's segment), not digits alone ("report.cgi",
 * "big.7z"; not "v1.2")?  What gives a rule its implied subtree and
 * what the default limits cut a path after (parse.c). */
int rl_segment_names_file(const char *seg, size_t len, int wild);

struct rl_ruleset {
	struct rl_arena arena;
	struct rl_settings settings;
	struct rl_rule **rules;         /* file order */
	size_t nrules;
	struct rl_rule **exact;         /* exact rules sorted by path, then
					   file order */
	size_t nexact;
	struct rl_glob *globs;          /* wildcard patterns in precedence
					   order */
	size_t nglobs;
	size_t nfiles;
	uint64_t max_moving;
	uint64_t max_inflight;          /* largest concurrency= */
	const char *max_moving_by;      /* who asks for them, for messages:
					   "the rule at FILE:LINE", "the
					   default limits at FILE:LINE",
					   ...; in the arena */
	const char *max_inflight_by;
	struct rl_key_head *rule_heads; /* by rule index */
	struct rl_key_head default_head, app_head;
};

/* Fill rs's key heads once the rules and the key prefix are final (the
 * loader's last step).  Returns 0, or -1 when out of memory. */
int rl_ruleset_key_heads(struct rl_ruleset *rs);

/* As rl_path_normalize, but a path already in normal form is not copied:
 * *out is then in itself (not NUL-terminated), otherwise buf (len + 1
 * bytes) holding the normalised path.  The request path's common case. */
int rl_path_view(const char *in, size_t len, int fold_case, char *buf,
		 const char **out, size_t *out_len, struct rl_diag *d);

/* The client address as rl_client_addr then rl_addr_format would give it,
 * into out (cap >= 64) with its length; "" and 0 for RL_ADDR_NONE.
 * Returns the source. */
enum rl_addr_source rl_client_addr_text(const struct rl_proxy_conf *pc,
					const char *remote, size_t remote_len,
					const char *const *values,
					const size_t *value_lens,
					size_t nvalues, unsigned v4bits,
					unsigned v6bits, char *out, size_t cap,
					size_t *out_len);

/* The rules that apply to a normalised path and method: the first
 * matching rule in precedence order that is not a settings rule (one of
 * only max-body= and upstream=) gives the limits, or none (the defaults);
 * max-body= and upstream= come from the first matching rule up to it that
 * sets them, or from the globals (NULL). */
struct rl_match {
	const struct rl_rule *rule;     /* whose limits apply; NULL: defaults */
	const struct rl_rule *body;     /* whose max-body= applies */
	const struct rl_rule *upstream; /* whose upstream= applies */
};
void rl_ruleset_match(const struct rl_ruleset *rs, const char *path,
		      size_t len, unsigned method_bit, struct rl_match *m);

/* s[0..n) double-quoted for a message: bytes outside printable ASCII and
 * the quote and backslash escaped, cut to 40 bytes plus "...".  buf needs
 * 200 bytes; returns buf. */
const char *rl_quote(char *buf, size_t cap, const char *s, size_t n);

/* Fill d (when not NULL) with col and the formatted message; returns -1 so
 * parsers can "return rl_fail(...)". */
int rl_fail(struct rl_diag *d, size_t col, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Append s[0..len) to buf[*pos..cap), keeping it NUL-terminated; -1 when it
 * does not fit.  Key building uses it instead of snprintf, which costs
 * more than the rest of a decision. */
int rl_put(char *buf, size_t cap, size_t *pos, const char *s, size_t len);

/* Compile a key spec ("header:X-Api-Key|addr") into arena memory.  Returns
 * NULL with d set (col into s) on a bad spec, or when out of memory. */
struct rl_key *rl_key_compile(struct rl_arena *a, const char *s, size_t len,
			      struct rl_diag *d);

/* Append text to buf[*pos..cap) escaping every byte outside
 * [A-Za-z0-9 . _ ~ / * -] (no spaces) as %XX, so client-supplied values can never forge the
 * ':', '=' and '+' separators of a store key.  Returns 0, or -1 when it
 * does not fit. */
int rl_key_escape(char *buf, size_t cap, size_t *pos, const char *s,
		  size_t len);

/* Render the client key of req under k into buf (NUL-terminated), the
 * client address being addr_text[0..addr_len) as rl_addr_format writes it
 * ("" when none).  Returns 0,
 * or -1 when no alternative has every part present and valid. */
int rl_key_render(const struct rl_key *k, const struct rl_request *req,
		  const char *addr_text, size_t addr_len, char *buf,
		  size_t cap, size_t *len);

/* The key "addr" alone, as rl_key_render renders it: "addr=" and the
 * address, escaped.  Also the key of a rule whose own key is missing
 * (decide.c), so both spell one client alike.  Returns 0, or -1 when there
 * is no address or it does not fit. */
int rl_key_render_addr(const char *addr_text, size_t addr_len, char *buf,
		       size_t cap, size_t *len);

#endif
