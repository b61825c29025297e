/*
 * trivial_authz.c - the cheapest possible FastCGI authorizer, the baseline
 * of tests/bench/wrk.sh: it answers every request "Status: 200 OK" with no
 * header and no body, reading nothing but the request's params (as any
 * authorizer must: lighttpd sends no FCGI_STDIN for a POST).  It measures
 * what the authorizer hop itself costs (one FastCGI connection per request
 * from lighttpd), so that rategate's figure can be read against it.
 *
 * Usage: trivial_authz [-j THREADS] [SOCKET]
 *   SOCKET  a unix socket path or HOST:PORT to listen on (FCGX_OpenSocket);
 *           without it, the listening socket inherited on fd 0 (lighttpd
 *           bin-path, spawn-fcgi), as rategate does.
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

static void *
worker(void *arg)
{
	static const char answer[] = "Status: 200 OK\r\n\r\n";
	FCGX_Request req;

	(void)arg;
	if (FCGX_InitRequest(&req, listen_fd, 0) != 0)
		return NULL;
	while (FCGX_Accept_r(&req) >= 0) {
		FCGX_PutStr(answer, (int)sizeof(answer) - 1, req.out);
		FCGX_Finish_r(&req);
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	int threads = 4, opt;

	while ((opt = getopt(argc, argv, "j:")) != -1) {
		if (opt == 'j' && atoi(optarg) >= 1 && atoi(optarg) <= 256) {
			threads = atoi(optarg);
		} else {
			fprintf(stderr, "usage: trivial_authz [-j THREADS] [SOCKET]\n");
			return 2;
		}
	}
	if (FCGX_Init() != 0) {
		fprintf(stderr, "trivial_authz: FCGX_Init failed\n");
		return 1;
	}
	listen_fd = 0;
	if (optind < argc) {
		listen_fd = FCGX_OpenSocket(argv[optind], 1024);
		if (listen_fd < 0) {
			fprintf(stderr, "trivial_authz: cannot listen on %s\n", argv[optind]);
			return 1;
		}
	}
	pthread_t tid[256];
	for (int i = 1; i < threads; i++)
		if (pthread_create(&tid[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "trivial_authz: pthread_create failed\n");
			return 1;
		}
	worker(NULL);
	return 0;
}
