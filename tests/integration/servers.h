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

/* ------------------------------------------------------------------ */
/* Added for the responder, CGI wrapper, WebSocket and bad-input tests. */

/* $top_srcdir/rel, read whole (malloc'd); fails the test when missing. */
char *srv_source(const char *rel);
/* text with the line of each "var.NAME" of pairs (NAME, VALUE, ...,
 * NULL) replaced by "var.NAME = VALUE"; VALUE is written as given (quote
 * strings yourself).  Fails if a var line is missing.  malloc'd. */
char *srv_set_vars(const char *text, const char *const *pairs);
/* An HTTP request with a body: len bytes of body, sent with
 * Content-Length, or with Transfer-Encoding: chunked when chunked != 0.
 * method NULL means POST.  Fails the test when no response arrives. */
void srv_http_body(const char *method, const char *url,
		   const char *const *hdrs, const void *body, size_t len,
		   int chunked, struct srv_resp *r);
/* Connect to 127.0.0.1:port, send len bytes of req, read until the peer
 * closes or timeout_s passes.  Returns what was read (malloc'd,
 * NUL-terminated, *outlen its length), or NULL when the connection
 * failed. */
char *srv_raw(int port, const void *req, size_t len, double timeout_s,
	      size_t *outlen);
/* The first child of parent whose /proc comm is name, waiting up to
 * timeout_s; 0 when there is none.  pids[] gets up to max of them when
 * not NULL (srv_children_named). */
pid_t srv_child(pid_t parent, const char *name, double timeout_s);
int srv_children_named(pid_t parent, const char *name, pid_t *pids, int max);
/* How many children parent has; *zombies (when not NULL) those in state
 * Z.  -1 when parent is gone. */
int srv_children(pid_t parent, int *zombies);
/* Entries of /proc/PID/fd, -1 when the process is gone. */
int srv_count_fds(pid_t pid);
/* 1 while pid exists and is not a zombie. */
int srv_alive(pid_t pid);
/* Wait until path contains needle: 1, or 0 after timeout_s. */
int srv_wait_file(const char *path, const char *needle, double timeout_s);
/* 64-bit FNV-1a of p as 16 hex digits, as tests/apps/echo_* print it. */
void srv_fnv(const void *p, size_t len, char out[17]);
/* Stop server (SIGTERM, as srv_stop) and wait up to timeout_s for every
 * process it had started (its children at the time of the call: FastCGI
 * programs it spawned) to exit too, reaping those that come back to us;
 * SIGKILL what is left.  Returns how many had to be killed. */
int srv_stop_tree(pid_t server, double timeout_s);

/* ------------------------------------------------------------------ */
/* Added for the nginx and Apache responder tests.                     */

/* GET every urls[i] (n of them, at most 64) at once (libcurl multi);
 * statuses[i] gets its HTTP status, 0 when it failed.  Returns how many
 * got an answer. */
int srv_http_parallel(const char *const *urls, int n, long *statuses);
/* The uid and gid of www-data (Apache's and nginx's workers); fails the
 * test when the user does not exist. */
void srv_www_data(uid_t *uid, gid_t *gid);
/* chown path to www-data (files and directories the workers write). */
void srv_chown_www(const char *path);

#endif
