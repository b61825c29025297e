/*
 * servers.h - helpers for the integration tests: real web servers
 * (lighttpd, apache2) and rategate started from a temporary directory on
 * free 127.0.0.1 ports, HTTP requests through libcurl, and a cleanup that
 * stops every process a test started.
 *
 * Nothing is assumed to be running or installed: a missing server fails
 * the test with the Debian package to install.  Every process is started
 * in its own process group and stopped by its PID (SIGTERM, then SIGKILL
 * after a grace period); the test process is made a child subreaper so
 * that the FastCGI processes a web server spawned come back to it when the
 * server exits and can be reaped and checked.
 *
 * Helpers fail the running Criterion test with a message (cr_assert), the
 * relevant log appended when a server misbehaves.  Call srv_cleanup from
 * the test's .fini so servers are stopped even when an assertion fails.
 */
#ifndef TESTS_INTEGRATION_SERVERS_H
#define TESTS_INTEGRATION_SERVERS_H

#include <stddef.h>
#include <sys/types.h>

#define SRV_PATH_MAX 512

/* The test's temporary directory, created by srv_setup (mode 0755 so that
 * Apache's www-data workers can read it). */
extern char srv_dir[SRV_PATH_MAX];

/* Create srv_dir, become a child subreaper.  For .init. */
void srv_setup(void);
/* Stop every process still running, reap, remove srv_dir.  For .fini. */
void srv_cleanup(void);

/* "srv_dir/rel" in a static rotating buffer (8 slots). */
const char *srv_path(const char *rel);
/* $top_srcdir, $top_builddir (default "."). */
const char *srv_srcdir(void);
const char *srv_builddir(void);
/* The built rategate ($top_builddir/rategate); fails the test if absent. */
const char *srv_rategate(void);
/* The absolute path of a server binary, or fail naming the package. */
const char *srv_need(const char *binary, const char *package);

/* A free TCP port on 127.0.0.1 (bound, read and released). */
int srv_free_port(void);

/* Write text to srv_dir/rel with mode; directories must exist. */
void srv_write(const char *rel, const char *text, int mode);
/* Read a whole file (malloc'd, NUL-terminated); NULL when unreadable. */
char *srv_read(const char *path);
/* Lines in a file (0 when missing). */
int srv_count_lines(const char *path);
/* text with every occurrence of pairs[2i] replaced by pairs[2i + 1]; pairs
 * ends with NULL.  Fails if a key does not occur.  malloc'd. */
char *srv_subst(const char *text, const char *const *pairs);
/* text with the line starting with prefix replaced by line.  Fails if no
 * line starts with prefix.  malloc'd. */
char *srv_set_line(const char *text, const char *prefix, const char *line);

/* Start argv with stdin from /dev/null and stdout+stderr appended to
 * out_path, in its own process group.  Returns the PID. */
pid_t srv_spawn(char *const argv[], const char *out_path);
/* Wait until 127.0.0.1:port accepts a connection (or, with port 0, until
 * the unix socket path does); fail with log_path's contents if pid exits
 * first or timeout_s passes. */
void srv_wait_ready(pid_t pid, int port, const char *unix_path,
		    const char *log_path, double timeout_s);
/* SIGTERM pid, wait up to timeout_s, then SIGKILL.  Returns the exit
 * status (0..255) or 128 + signal. */
int srv_stop(pid_t pid, double timeout_s);
/* Reap children that came back to us (subreaper) within timeout_s: fills
 * statuses (exit status or 128 + signal) and returns how many. */
int srv_reap_orphans(int *statuses, int max, double timeout_s);

/* An HTTP response. */
struct srv_resp {
	long status;
	char status_line[128];  /* "HTTP/1.1 429 Too Many Requests" */
	char *headers;          /* raw header lines, CRLF-separated */
	char *body;
	size_t body_len;
};

/* GET (or method) url with extra request headers ("Name: value", NULL
 * terminated; may be NULL).  Fails the test when no response arrives. */
void srv_http(const char *method, const char *url, const char *const *hdrs,
	      struct srv_resp *r);
/* The value of the first header named name (case-insensitive), trimmed,
 * in buf; NULL when absent. */
const char *srv_header(const struct srv_resp *r, const char *name,
		       char *buf, size_t cap);
/* How many header lines are named name. */
int srv_header_count(const struct srv_resp *r, const char *name);
void srv_resp_free(struct srv_resp *r);

#endif
