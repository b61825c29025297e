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
/* The built rategate ($top_builddir/rategate), or $RATEGATE_WRAPPER when
 * set: a script that runs it under valgrind (tests/run-all.sh); fails the
 * test if absent. */
const char *srv_rategate(void);
/* How much longer than usual to wait for rategate: 10 under
 * RATEGATE_WRAPPER (valgrind), else 1. */
int srv_slow(void);
/* The absolute path of a server binary, or fail naming the package. */
const char *srv_need(const char *binary, const char *package);

/* Seconds on the monotonic clock, for deadlines. */
double srv_now(void);
/* Sleep ms milliseconds (resumed when a signal interrupts it). */
void srv_sleep_ms(int ms);

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
/* srv_http of base (scheme, host and port) followed by path. */
void srv_http_at(const char *method, const char *base, const char *path,
		 const char *const *hdrs, struct srv_resp *r);
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
/* Whether a process whose comm (/proc/PID/stat) is comm runs the program
 * name: rategate under RATEGATE_WRAPPER's valgrind is called after
 * valgrind's tool ("memcheck-amd64-"). */
int srv_same_program(const char *comm, const char *name);
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

/* ------------------------------------------------------------------ */
/* Set-up and checks that several test files share.                    */

/* The real path of $top_builddir/rel (a program make check builds, such
 * as "tests/apps/echo_cgi") into out; fails the test when it is not
 * built. */
void srv_built(const char *rel, char out[SRV_PATH_MAX]);
/* tests/apps/echo_fcgi with threads threads on 127.0.0.1:port, or with
 * port 0 on the unix socket sock (a socket file left by an earlier one
 * is removed first), its output in srv_dir/app.out; waits until it
 * accepts.  count_file, when not NULL, is exported as
 * ECHO_FCGI_COUNT_FILE (the app keeps its call counter there: read it
 * with srv_read_int; unsetenv it in .fini).  Returns the PID. */
pid_t srv_start_echo_fcgi(int port, const char *sock, int threads,
			  const char *count_file);
/* The number at the start of the file at path; 0 when it is missing. */
int srv_read_int(const char *path);
/* rategate -c rules -l listen [-j workers] -L log with stdout and stderr
 * appended to out (all paths absolute; workers 0 leaves -j out), waited
 * for on listen: "unix:PATH" and a PATH are unix sockets, anything else
 * is HOST:PORT.  Returns the PID. */
pid_t srv_start_rategate(const char *rules, const char *listen, int workers,
			 const char *log, const char *out);
/* examples/<example>, a lighttpd configuration, with var.rategate (the
 * built rategate), var.rategate_rules (srv_dir/rules_rel), var.state_dir
 * (srv_dir), var.docroot (srv_dir/docroot) and var.port set, and when
 * max_procs > 0 its "max-procs" line set to it.  malloc'd. */
char *srv_lighttpd_conf(const char *example, const char *rules_rel, int port,
			int max_procs);
/* Write conf to srv_dir/lighttpd.conf and start lighttpd -D on it,
 * waited for on port.  Returns the PID. */
pid_t srv_start_lighttpd(const char *conf, int port);
/* examples/<example>, an Apache configuration, with the line of each
 * "Define NAME" of defines (NAME, VALUE, ..., NULL) made "Define NAME
 * VALUE", written to srv_dir/apache.conf; apache2 -DFOREGROUND started on
 * it and waited for on port.  Returns the PID. */
pid_t srv_start_apache(const char *example, const char *const *defines, int port);

/* As srv_subst, but a key that does not occur in text is passed over
 * (templates that use only some of the keys).  malloc'd. */
char *srv_subst_some(const char *text, const char *const *pairs);
/* srv_subst(text, pairs) written to srv_dir/rel with mode. */
void srv_write_subst(const char *rel, const char *text,
		     const char *const *pairs, int mode);
/* As srv_read, but a missing file reads as "" (malloc'd all the same). */
char *srv_read_text(const char *path);
/* How many times needle occurs in the file at path; 0 when missing. */
int srv_count_in_file(const char *path, const char *needle);
/* The file at path exists (cr_assert) and contains needle (cr_expect,
 * the file in the message). */
void srv_expect_in_file(const char *path, const char *needle);
/* The file at path, when it exists, holds no sanitizer report (neither
 * "Sanitizer" nor "runtime error"; cr_expect). */
void srv_expect_no_sanitizer(const char *path);
/* For failure messages: for each (LABEL, REL) of pairs (NULL-terminated)
 * a line "--- LABEL:" and the text of srv_dir/REL (nothing when missing;
 * an empty LABEL adds the text alone).  A static buffer, replaced by the
 * next call. */
const char *srv_logs(const char *const *pairs);

/* The value of the line "name=VALUE" of an echo app's answer body
 * (tests/apps/echo_*) into buf; "" when there is none.  Returns buf. */
const char *srv_field(const char *body, const char *name, char *buf, size_t cap);
/* cr_expect that r's body has the line name=want. */
void srv_expect_field(const struct srv_resp *r, const char *name, const char *want);
/* cr_expect that r's body contains line. */
void srv_expect_line(const struct srv_resp *r, const char *line);
/* n bytes of every value from a fixed xorshift64 sequence, each the state
 * shifted right by shift (56: its top byte, 0: its low byte).
 * malloc'd. */
char *srv_noise(size_t n, int shift);
/* method base+path with len bytes of srv_noise(len, 56) (chunked when
 * chunked != 0) and "X-Test: upload": the echo app answers 200 and saw
 * the method, the body by length and checksum, the header, and
 * content_length=len, or content_length=(unset) for a chunked body when
 * chunked_length is 0 (Apache passes a chunked body on without a length,
 * nginx reads it whole and passes its length).  logs (may be NULL) adds
 * the servers' logs to a failure message. */
void srv_expect_upload(const char *base, const char *method, const char *path,
		       size_t len, int chunked, int chunked_length,
		       const char *(*logs)(void));
/* rategate's 429 as a web server passes it on: the status line,
 * Retry-After and X-RateLimit-Reset of 1..60 s, X-RateLimit-Limit limit
 * and -Remaining 0, Cache-Control no-store, Content-Type text/plain;
 * charset=utf-8 and body.  logs as for srv_expect_upload. */
void srv_expect_429(const struct srv_resp *r, const char *limit, const char *body,
		    const char *(*logs)(void));

/* Wait up to timeout_s until parent has no child left, running or zombie
 * (a reap may lag the answer a little).  Returns how many it has then,
 * *zombies (when not NULL) those in state Z. */
int srv_wait_no_children(pid_t parent, int *zombies, double timeout_s);
/* Stop server, a web server that spawned rategate (srv_stop_tree, 15 s):
 * its rategate processes drained and exited by themselves (none had to be
 * killed), and rategate's log at log_path says "event=stop msg=stopped"
 * and holds no sanitizer report. */
void srv_stop_spawner(pid_t server, const char *log_path);
/* The HTTP status of GET url, or -1 when no answer came; the body is
 * thrown away.  No assertions: for client threads. */
long srv_status(const char *url);

#endif
