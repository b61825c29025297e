/*
 * replay.h - `rategate replay`: yesterday's traffic through today's rules on
 * a virtual clock, using a fresh process-local store (live counters are
 * never touched).
 *
 * Input lines are either a plain trace,
 *     <unix-time-float> <client-address> <method> <path>[?query] [cost]
 * or the Apache/nginx combined (or common) access log format.  Blank lines
 * and lines starting with '#' are skipped.
 */
#ifndef GATEWAY_REPLAY_H
#define GATEWAY_REPLAY_H

#include <stdio.h>

#include "rules.h"

struct replay_line {
	int64_t t_ms;
	char addr[64];
	char method[64];                /* longer: a malformed line */
	char path[RL_PATH_MAX + 2];     /* raw target path, no query; one
					   byte more than a decision takes */
	char query[RL_PATH_MAX + 1];
	int has_query;
	uint64_t cost;                  /* 0: the rule's */
	int status;                     /* the response status a log line
					   records (100..599), for
					   deduct-when=; 0: not known (a
					   trace) */
};

/* Parse one line (no newline).  Returns 1 and fills *out, 0 for a line to
 * skip (blank, comment), 2 for a log line without a request ("-": skipped,
 * counted), or -1 with a message in err. */
int replay_parse_line(const char *s, size_t len, struct replay_line *out,
		      char *err, size_t errcap);

/* Counters a replay holds at once (1 << 22; tests lower it): when full, a
 * new key evicts as a gateway's store does, said on errs at the end. */
extern size_t replay_max_keys;
/* replay_run's flags: --summary, --verbose. */
enum { REPLAY_SUMMARY = 1, REPLAY_VERBOSE = 2 };

/* Replay every line of in through rs, printing one line per request to out
 * (with REPLAY_VERBOSE followed by rule=PATTERN and origin=ORIGIN; with
 * REPLAY_SUMMARY instead the most-limited clients and paths) and problems
 * as "NAME:LINE: message" to errs.  Returns 0, or 1 when a line was bad. */
int replay_run(const struct rl_ruleset *rs, FILE *in, const char *name,
	       int flags, FILE *out, FILE *errs);

#endif
