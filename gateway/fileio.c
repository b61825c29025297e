/*
 * fileio.c - file access for rule loading, kept out of the pure library.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

static int
read_file(void *ctx, const char *path, char **data, size_t *len, char *msg,
	  size_t msgcap)
{
	struct stat sb;
	/* O_NONBLOCK: a FIFO among the rule files must be refused below, not
	 * block the open until a writer comes (a review found a reload hung
	 * so, and SIGTERM with it); a regular file ignores the flag */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	(void)ctx;
	if (fd < 0) {
		snprintf(msg, msgcap, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		snprintf(msg, msgcap, "%s", S_ISDIR(sb.st_mode) ?
			 "is a directory" : "not a regular file");
		close(fd);
		return -1;
	}
	if ((uint64_t)sb.st_size > RL_FILE_SIZE_MAX) {
		snprintf(msg, msgcap, "file too large (%lld bytes, at most %u)",
			 (long long)sb.st_size, RL_FILE_SIZE_MAX);
		close(fd);
		return -1;
	}
	size_t cap = (size_t)sb.st_size, n = 0;
	char *buf = malloc(cap + 1);
	if (buf == NULL) {
		snprintf(msg, msgcap, "out of memory");
		close(fd);
		return -1;
	}
	while (n < cap) {
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(msg, msgcap, "%s", strerror(errno));
			free(buf);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*data = buf;
	*len = n;
	return 0;
}

/* The first directory glob() could not read, other than one that does not
 * exist (ENOENT) or is not a directory (ENOTDIR): rules are loaded by one
 * thread at a time. */
static char glob_err_path[200];
static int glob_err_errno;

static int
glob_err(const char *path, int err)
{
	if (err != ENOENT && err != ENOTDIR && glob_err_path[0] == '\0') {
		snprintf(glob_err_path, sizeof(glob_err_path), "%s", path);
		glob_err_errno = err;
	}
	return 0;
}

static int
expand(void *ctx, const char *pattern, char ***paths, size_t *n, char *msg,
       size_t msgcap)
{
	glob_t g;

	(void)ctx;
	*paths = NULL;
	*n = 0;
	if (strpbrk(pattern, "*?[") == NULL) {
		/* a plain name: reading it reports a missing file */
		*paths = malloc(sizeof(**paths));
		if (*paths == NULL || ((*paths)[0] = strdup(pattern)) == NULL) {
			free(*paths);
			*paths = NULL;
			snprintf(msg, msgcap, "out of memory");
			return -1;
		}
		*n = 1;
		return 0;
	}
	/* no GLOB_ERR: a missing directory is "matches nothing" (a warning);
	 * but one that cannot be read (EACCES, ELOOP) may hold rules that
	 * would be dropped without a word (a review found a directory of
	 * mode 0700 read so by a gateway of another user): an error */
	glob_err_path[0] = '\0';
	int r = glob(pattern, 0, glob_err, &g);
	if (glob_err_path[0] != '\0') {
		snprintf(msg, msgcap, "%s: %s", glob_err_path, strerror(glob_err_errno));
		if (r == 0)
			globfree(&g);
		return -1;
	}
	if (r == GLOB_NOMATCH)
		return 0;
	if (r != 0) {
		snprintf(msg, msgcap, "%s", r == GLOB_NOSPACE ? "out of memory" :
			 "read error");
		return -1;
	}
	*paths = calloc(g.gl_pathc ? g.gl_pathc : 1, sizeof(**paths));
	if (*paths == NULL) {
		globfree(&g);
		snprintf(msg, msgcap, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < g.gl_pathc; i++) {
		(*paths)[i] = strdup(g.gl_pathv[i]);
		if ((*paths)[i] == NULL) {
			for (size_t j = 0; j < i; j++)
				free((*paths)[j]);
			free(*paths);
			*paths = NULL;
			globfree(&g);
			snprintf(msg, msgcap, "out of memory");
			return -1;
		}
	}
	*n = g.gl_pathc;       /* glob sorts unless GLOB_NOSORT */
	globfree(&g);
	return 0;
}

static int
identity(void *ctx, const char *path, char *out, size_t cap)
{
	struct stat sb;

	(void)ctx;
	if (stat(path, &sb) != 0)
		return -1;
	snprintf(out, cap, "%llu:%llu", (unsigned long long)sb.st_dev,
		 (unsigned long long)sb.st_ino);
	return 0;
}

const struct rl_io fileio = { NULL, read_file, expand, identity };

struct rl_ruleset *
fileio_load_rules(const char *path, int print_warnings)
{
	struct rl_report rep;
	struct rl_ruleset *rs = rl_ruleset_load(path, &fileio, &rep);

	for (size_t i = 0; i < rep.nerrors; i++)
		fprintf(stderr, "%s\n", rep.errors[i]);
	if (rep.truncated)
		fprintf(stderr, "%s: too many errors, stopped after %d\n", path,
			RL_REPORT_MAX_ERRORS);
	if (print_warnings)
		for (size_t i = 0; i < rep.nwarnings; i++)
			fprintf(stderr, "%s\n", rep.warnings[i]);
	rl_report_free(&rep);
	return rs;
}
