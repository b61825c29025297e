/*
 * inspect.h - `rategate inspect`: look inside the shared-memory store of a
 * rule set without disturbing it (each stripe's lock is held only while a
 * few buckets are copied out), list its busiest keys, show one client's
 * counters, and reset keys to lift a ban.
 *
 *   rategate inspect (-c RULES | --store FILE) [--stats] [--top N]
 *                    [--client TEXT] [--reset TEXT] [--now MS]
 *
 * Without an action it prints --stats and --top 10.
 */
#ifndef GATEWAY_INSPECT_H
#define GATEWAY_INSPECT_H

#include <stdio.h>

#define INSPECT_TOP_MAX 1000    /* largest --top N */

/* argv[0] is "inspect".  Prints to standard output and error; returns the
 * exit status: 0, 1 (the store or rules could not be read, nothing
 * matched a --client or --reset), 2 (usage). */
int inspect_main(int argc, char **argv);

/* The same, printing to out and errs (tests). */
int inspect_run(int argc, char **argv, FILE *out, FILE *errs);

#endif
