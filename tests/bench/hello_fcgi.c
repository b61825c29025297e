/*
 * hello_fcgi.c - a trivial FastCGI responder for tests/bench/wrk.sh: it
 * answers every request "200 OK", Content-Type text/plain, body "hello\n",
 * and ignores the request body.  The benchmark serves it from lighttpd
 * directly and through rategate in responder mode, to show what putting
 * rategate in front of an application costs.
 *
 * Usage: hello_fcgi [-j THREADS] [SOCKET]
 *   SOCKET  a unix socket path or HOST:PORT to listen on (FCGX_OpenSocket);
 *           without it, the listening socket inherited on fd 0 (lighttpd
 *           bin-path, spawn-fcgi).
 *   -j N    worker threads, each in its own FCGX_Accept_r loop (default 4).
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
	static const char answer[] =
		"Status: 200 OK\r\n"
		"Content-Type: text/plain\r\n"
		"Content-Length: 6\r\n"
		"\r\n"
		"hello\n";
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
			fprintf(stderr, "usage: hello_fcgi [-j THREADS] [SOCKET]\n");
			return 2;
		}
	}
	if (FCGX_Init() != 0) {
		fprintf(stderr, "hello_fcgi: FCGX_Init failed\n");
		return 1;
	}
	listen_fd = 0;
	if (optind < argc) {
		listen_fd = FCGX_OpenSocket(argv[optind], 1024);
		if (listen_fd < 0) {
			fprintf(stderr, "hello_fcgi: cannot listen on %s\n", argv[optind]);
			return 1;
		}
	}
	pthread_t tid[256];
	for (int i = 1; i < threads; i++)
		if (pthread_create(&tid[i], NULL, worker, NULL) != 0) {
			fprintf(stderr, "hello_fcgi: pthread_create failed\n");
			return 1;
		}
	worker(NULL);
	return 0;
}
