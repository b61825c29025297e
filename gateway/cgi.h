/*
 * cgi.h - the responder's CGI back end: run a legacy CGI/1.1 program
 * (RFC 3875) for one allowed request and stream its answer to the web
 * server.  The program is started directly (fork and exec, no shell), in its
 * own directory and its own process group, killed with the gateway, with an environment made from
 * the request's FastCGI params; the request body streams to its standard
 * input while its output streams back, its head re-rendered by
 * proxy_head_render with the rate-limit headers added.  What the
 * environment holds, what becomes a 502 or a 413, and how timeouts work
 * are written at the top of cgi.c.
 *
 * Process requirements (the gateway's main sets them up):
 *   - SIGCHLD must not be ignored (SIG_IGN makes the kernel reap children
 *     itself, and the exit status is lost), and no other thread may call
 *     waitpid(-1) or wait(): cgi_run reaps its own child by its pid;
 *   - SIGPIPE need not be ignored: cgi_run blocks it in the calling thread
 *     for the duration of the call and discards the ones it caused.
 * Thread-safe: every call has its own pipes and child; nothing is shared.
 */
#ifndef GATEWAY_CGI_H
#define GATEWAY_CGI_H

#include <stddef.h>

#include "proxy.h"

#define CGI_BODY_CHUNK (16u * 1024)     /* request body bytes per client read */
#define CGI_OUT_CHUNK (64u * 1024)      /* script output bytes per pipe read */
/* After its output closed with the head sent, how long a script is waited
 * for before its answer ends without it (it goes on in the background,
 * reaped, or killed at its deadline, by a thread of its own). */
#define CGI_EOF_GRACE_MS 100
/* How many such scripts a process leaves running at once; past that the
 * answer waits for the script's exit as before (bounded by the workers),
 * so clients cannot pile up scripts beyond workers + this. */
#define CGI_DETACHED_MAX 16
/* PATH given to the script when the params carry none. */
#define CGI_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* Run the CGI program script for one request and stream its answer to c.
 * script: the program's path (a relative one is taken from the gateway's
 * working directory and made absolute).  params: the FastCGI params of
 * the request (the CGI/1.1 meta-variables the web server sent); nothing is
 * kept past the call.  spec: timeout_ms (<= 0: none), max_body,
 * content_length, the extra headers and variables, the error format.
 *
 * Returns 0 when a complete response was sent to the client (the
 * script's, or our own 502 or 413; a script's body cut short by a crash or
 * the timeout after its head also counts, since the client got all we
 * will ever send), or -1 when the client went away (a failed read or
 * write, or a body shorter than content_length).  res is always filled:
 * status is what the client got (0 when it got nothing before going
 * away), error is empty when all went well, else one line for the log.
 * The child is always reaped before cgi_run returns. */
int cgi_run(const char *script, const struct rl_param *params, size_t nparams,
	    const struct proxy_spec *spec, struct proxy_client *c,
	    struct proxy_result *res);

/* SIGKILL to the process group of every script a cgi_run is running now
 * (a stopping gateway's last word: their cgi_run calls then finish as for
 * a crash).  Returns how many.  Thread-safe. */
unsigned cgi_kill_all(void);

/* The same for the scripts left working after their answer only (no
 * request waits for them): a stop kills them first, before the workers
 * that started them end.  Returns how many.  Thread-safe. */
unsigned cgi_kill_detached(void);

/* The same for those the calling thread started: a worker ending at a
 * stop kills them itself, with their process groups, before the kernel
 * kills the scripts alone.  Returns how many.  Thread-safe. */
unsigned cgi_kill_detached_here(void);

/* How many scripts the calling thread started that are not reaped yet
 * (one left working after its answer included).  The kernel kills each
 * (PR_SET_PDEATHSIG) when that thread ends, so a worker must not end
 * while it has any, but at a stop.  Thread-safe. */
unsigned cgi_started_here(void);

#endif
