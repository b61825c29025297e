/*
 * fcgi.h - rategate as a FastCGI server (libfcgi, thread-safe API): the
 * authorizer role (answer allow or deny) and the responder role (pass
 * allowed requests on to a CGI program or a FastCGI application), chosen by
 * the FCGI_ROLE the web server sends, on the same socket.
 *
 * The socket, first match wins:
 *   1. -l LISTEN on the command line;
 *   2. an inherited listening socket on fd 0 (FCGI_LISTENSOCK_FILENO): how
 *      lighttpd `bin-path`, mod_fcgid and spawn-fcgi start a FastCGI app;
 *   3. the rule set's `listen` directive.
 * LISTEN is a unix socket path ("/run/rategate.sock" or
 * "unix:/run/rategate.sock"; created with mode 0660 so that only the owner
 * and group -- the web server's -- can connect; a stale socket file left by
 * a dead process is replaced, a live one is an error) or a numeric address
 * and port ("127.0.0.1:9000", "[::1]:9000").  A TCP socket is reachable by
 * every local user: prefer a unix socket, and set FCGI_WEB_SERVER_ADDRS
 * (read as libfcgi reads it) to restrict which peers may connect over IPv4.
 *
 * Requests are served by N threads (-j N, default FCGI_WORKERS_DEFAULT),
 * each with its own FCGX_Request; they share the rule set (read-only) and
 * the store (the process-local store behind a mutex).  Each accepts its
 * connections itself and waits for the web server at most the rules'
 * client-timeout without progress (see fcgi.c).
 *
 * Signals: SIGTERM, SIGINT or SIGUSR1 stop accepting, let every request in
 * flight finish (for at most FCGI_DRAIN_S seconds; CGI scripts still
 * running then are killed, and their workers get FCGI_KILL_GRACE_S more)
 * and exit 0; SIGHUP
 * reloads the rules (a file with errors keeps the old rules; every error
 * is logged with its position).
 */
#ifndef GATEWAY_FCGI_H
#define GATEWAY_FCGI_H

#include <stddef.h>

#include "rules.h"

#define FCGI_WORKERS_DEFAULT 4
#define FCGI_WORKERS_MAX 256
#define FCGI_RETIRE_S 30         /* workers beyond -j idle this long go */
#define FCGI_ACCEPT_WAKE_MS 1000 /* a worker in accept() looks up as often */
#define FCGI_DRAIN_S 10          /* wait for requests in flight at exit */
#define FCGI_KILL_GRACE_S 2      /* then for workers whose CGI script was killed */
#define FCGI_PARAMS_MAX (1u << 20) /* bytes of params copied per request */
/* A worker keeps its copy of the params (the bytes, and their index) for
 * the next request up to this many bytes each; after a larger head they
 * are freed and the heap trimmed (fcgi.c, params_release). */
#define FCGI_PARAMS_KEEP (64u * 1024)
/* listen() backlog of a socket rategate makes (-l, listen): as deep as the
 * kernel allows (it caps it at net.core.somaxconn, 4096 by default since
 * Linux 5.4).  128 made lighttpd and nginx fail most requests with 500 once
 * some 130 came at once ("connection was dropped after accept()", EAGAIN
 * on a unix socket), which lighttpd's own socket (bin-path, 1024) did not. */
#define FCGI_BACKLOG 4096
/* client-timeout (see fcgi.c): bytes of a request's BEGIN_REQUEST and
 * params seen whole before libfcgi reads them (a larger head is bounded
 * by the socket's timeouts only); a body of known length up to
 * FCGI_BODY_PREFETCH bytes is read whole before the application is
 * called; after a body stall the connection is closed once the web
 * server hung up, or sent nothing for FCGI_LINGER_IDLE_MS, or after
 * FCGI_LINGER_MS. */
#define FCGI_HEAD_PEEK 16384
#define FCGI_BODY_PREFETCH (64u * 1024)
#define FCGI_LINGER_MS 2000
#define FCGI_LINGER_IDLE_MS 200

struct fcgi_options {
	const char *rules;      /* -c FILE */
	const char *listen;     /* -l LISTEN, or NULL */
	const char *workers;    /* -j N as typed, or NULL */
	const char *log;        /* -L FILE, or NULL: standard error */
	const char *mode;       /* -M MODE: the unix socket's mode (octal), or NULL */
	const char *owner;      /* -U USER[:GROUP]: its owner, or NULL */
};

/* The syntax of -j and -M (-t checks it too).  Returns 0, or -1 with a
 * message in err. */
int fcgi_check_options(const struct fcgi_options *o, char *err, size_t cap);

/* Load the rules, open the store and the socket, serve until a stop
 * signal.  Returns the process exit status: 0 after a clean stop, 1 when
 * something could not be set up (said on standard error), 2 for bad
 * options. */
int fcgi_main(const struct fcgi_options *o);

/* The first value of the param name, or NULL. */
const char *fcgi_param(const struct rl_param *params, size_t n,
		       const char *name);

/* The engine's view of a request from its CGI/FastCGI params (method,
 * target via target_parse into buf, REMOTE_ADDR, CONTENT_LENGTH as
 * body_bytes).  rq points into params and buf.  Returns 0, or -1 when
 * CONTENT_LENGTH is not a decimal number (the caller answers 400). */
int fcgi_request(const struct rl_param *params, size_t np, char *buf,
		 size_t cap, struct rl_request *rq);

/* The length value fcgi_request refused (CONTENT_LENGTH, or in the
 * authorizer role an HTTP_CONTENT_LENGTH), for the log; NULL if none. */
const char *fcgi_bad_length(const struct rl_param *params, size_t np);

#endif
