/*
 * fileio.h - the real file system behind the rules library's rl_io: read a
 * rule file (bounded by RL_FILE_SIZE_MAX), expand include globs (sorted),
 * and name a file by device and inode to catch include cycles.
 */
#ifndef GATEWAY_FILEIO_H
#define GATEWAY_FILEIO_H

#include "rules.h"

/* An rl_io that reads the local file system; ctx is unused. */
extern const struct rl_io fileio;

/* Load and print every diagnostic to stderr; NULL on errors. */
struct rl_ruleset *fileio_load_rules(const char *path, int print_warnings);

#endif
