/*
 * fcgi_stub.c - the cheapest possible FastCGI programs, the baselines of
 * tests/bench/wrk.sh, in one binary:
 *
 *   fcgi_stub -a  an authorizer: every request "Status: 200 OK", no header
 *                 and no body, reading nothing but the request's params (as
 *                 any authorizer must: lighttpd sends no FCGI_STDIN for a
 *                 POST).  It measures what the authorizer hop itself costs
 *                 (one FastCGI connection per request from lighttpd), so
 *                 that rategate's figure can be read against it.
 *   fcgi_stub     a responder: every request "200 OK", Content-Type
 *                 text/plain, body "hello\n"; the request body is ignored.
 *                 The benchmark serves it from lighttpd directly and through
 *                 rategate in responder mode, to show what putting rategate
 *                 in front of an application costs.
 *
 * Usage: fcgi_stub [-a] [-j THREADS] [SOCKET]
 *   SOCKET  a path or :PORT to listen on (FCGX_OpenSocket); without it,
 *           the listening socket inherited on fd 0 (lighttpd's bin-path,
 *           spawn-fcgi), as rategate does.
 *   -j N    worker threads, each in its own FCGX_Accept_r loop (default 4,
 *           rategate's default).
 * Stops on SIGTERM or SIGINT (the default action).
 */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int listen_fd;
static const char *answer = "Status: 200 OK\r\n"
			    "Content-Type: text/plain\r\n"
			    "Content-Length: 6\r\n"
			    "\r\n"
			    "hello\n";

static void *
worker(void *arg)
{
	FCGX_Request req;
	int len = (int)strlen(answer);

	(void)arg;
	if (FCGX_InitRequest(&req, listen_fd, 0) != 0)
		return NULL;
	while (FCGX_Accept_r(&req) >= 0) {
		FCGX_PutStr(answer, len, req.out);
		FCGX_Finish_r(&req);
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	int threads = 4, opt;

	while ((opt = getopt(argc, argv, "aj:")) != -1) {
		if (opt == 'a') {
			answer = "Status: 200 OK\r\n\r\n";
		} else if (opt == 'j' && atoi(optarg) >= 1 && atoi(optarg) <= 256) {
			threads = atoi(optarg);
		} else {
			fprintf(stderr, "usage: fcgi_stub [-a] [-j THREADS] [SOCKET]\n");
			return 2;
		}
	}
	if (FCGX_Init() != 0) {
		fprintf(stderr, "fcgi_stub: FCGX_Init failed\n");
		return 1;
	}
	listen_fd = 0;
	if (optind < argc) {
		listen_fd = FCGX_OpenSocket(argv[optind], 1024);
		if (listen_fd < 0) {
			fprintf(stderr, "fcgi_stub: cannot listen on %s\n", argv[optind]);
			return 1;
		}
	}
	pthread_t tid[256];
	for (int i = 1; i < threads; i++)
		if (pthread_create(&tid[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "fcgi_stub: pthread_create failed\n");
			return 1;
		}
	worker(NULL);
	return 0;
}
