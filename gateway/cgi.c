/*
 * cgi.c - the responder's CGI back end (see cgi.h): one legacy CGI/1.1
 * program per allowed request, its answer streamed to the web server.
 *
 * Starting the program: vfork, then in the child only async-signal-safe
 * system calls before execve (spawn_child): the pipes onto fds 0 and 1,
 * every other fd from 3 up closed (libfcgi's sockets and anything another
 * thread opened without O_CLOEXEC never reach the script), the working
 * directory, a process group of its own (so a timeout kills whatever the
 * script started too), an empty signal mask and the default disposition
 * for every signal (the gateway ignores SIGPIPE and blocks its stop
 * signals in workers; an exec would keep both), and PR_SET_PDEATHSIG
 * SIGKILL: when the gateway dies, even by SIGKILL (mod_fcgid sends one
 * some 9 s into a stop, before our 10 s drain ends), the kernel kills the
 * script, so it is never left behind as an orphan.  (Every process the
 * script itself started survives that case, and so does a
 * set-user-ID or set-group-ID script, or one that changes its
 * credentials: the kernel clears the death signal then; a SIGTERM stop or
 * a timeout kills the whole process group.)  posix_spawn, which we
 * used first, cannot ask for the death signal.  vfork, not fork: the
 * child borrows the gateway's memory until its exec (the calling thread
 * waits meanwhile, every signal blocked), so the cost does not grow with
 * the gateway's heap (a fork would copy the page tables of a `memory`
 * store's million keys, then fault on every page it writes).  What the
 * child writes of ours: its own stack frames below the caller's, errno,
 * and what glibc itself does in any thread (lazy binding of the calls'
 * GOT entries; open, close and write set and restore the thread's
 * cancellation state, and rategate never cancels a thread).  Closing the
 * fds falls back from close_range (Linux 5.9; a seccomp filter may refuse
 * it) to closing one by one below the descriptor limit.  A failed chdir
 * or exec (ENOENT, EACCES, ENOEXEC) reaches the caller through a
 * close-on-exec pipe (valgrind runs a vfork as a fork) and becomes a 502
 * naming the error.  No shell: argv is { script, NULL },
 * and a script without a "#!" line fails with ENOEXEC rather than being
 * run by /bin/sh.
 *
 * Working directory: the script's own directory, as RFC 3875 (section 7.2)
 * suggests and Apache and lighttpd do, so scripts find their files by
 * relative paths.  A relative script path is made absolute against the
 * gateway's working directory first; argv[0] and SCRIPT_FILENAME are the
 * absolute path.
 *
 * Environment (built before spawning; the first occurrence of a name
 * wins; nothing of the gateway's own environment is passed):
 *   SCRIPT_FILENAME=the script's absolute path (ours, whatever the web
 *     server sent: it is the file being run);
 *   spec->extra_env (RL_CLIENT=...: the gateway's own facts beat a param
 *     of the same name);
 *   every param whose name is [A-Za-z_][A-Za-z0-9_]* and whose value holds
 *     no NUL byte (others are skipped: a NUL would cut the value short, and
 *     names like "BASH_FUNC_x%%" are how shellshock got in), except
 *     HTTP_PROXY (httpoxy: a client's "Proxy:" header must not become the
 *     proxy of the script's HTTP library);
 *   GATEWAY_INTERFACE=CGI/1.1 and PATH=CGI_DEFAULT_PATH when still missing.
 * CONTENT_LENGTH is the web server's: with a chunked body it is absent and
 * the script reads its standard input to the end.
 *
 * Standard error: inherited.  The script's messages go where the gateway's
 * own standard error goes (lighttpd's server.breakagelog or its error log
 * for a gateway lighttpd started; the terminal or the service's journal
 * otherwise), unprefixed; a line shorter than PIPE_BUF written at once
 * does not interleave with the gateway's own lines when that is a pipe.
 * When the gateway has no fd 2 the script gets /dev/null there, so a file
 * the script opens never lands on fd 2.
 *
 * Streaming: both pipes are non-blocking on our side and served by one
 * poll() loop, so a script that writes before it reads its input cannot
 * deadlock with us: its output goes on to the client (c->write blocks;
 * only the head, at most PROXY_HEAD_MAX bytes, is held back) while its
 * input waits in the pipe.  The body is read from the client in
 * CGI_BODY_CHUNK pieces, only when the script's stdin is writable, never
 * past CONTENT_LENGTH; stdin is closed at the end of the body, never
 * before (a script that answers first and reads after still gets all of
 * it; a script being killed gets SIGKILL before its stdin closes, so a cut
 * body never looks complete to it).  A script that closes its stdin early
 * ends the body: the rest stays unread by us (libfcgi discards it).
 *
 * Timeouts: spec->timeout_ms covers the request from cgi_run's start to
 * the script's exit, less the time spent waiting for the web server: a
 * c->read or c->write that blocks on a slow web server is bounded by the
 * gateway's client-timeout, and the deadline moves on by the time it took,
 * so a slow web server is never reported as a slow script.  When the
 * deadline passes, the script's process group gets SIGKILL (a child that
 * left the group with setsid escapes it).  The answer ends when the
 * script's output closes, so a script that exits while another process
 * (a child it left in the background) still holds its output open is
 * ended by the deadline too, as Apache's mod_cgi would; res->error then
 * says the script exited, with its status, and who kept the output open,
 * not that it timed out.
 *
 * What the client gets:
 *   the script's head (re-rendered, with spec->extra_headers) and body, as
 *     they come; a failure after the head (crash, timeout, body over
 *     max_body) can only cut the body short, and res->error says so; an
 *     exit status other than 0 after a complete response is only noted;
 *   413 Content Too Large when the body exceeds max_body before the head:
 *     at once, without starting the script, when CONTENT_LENGTH says so,
 *     else when the streamed body passes it (the script is killed);
 *   502 Bad Gateway when the script cannot be started, writes a malformed
 *     head, exits or is killed before its head is complete, or the timeout
 *     passes before its head;
 *   nothing more when the client goes away (a failed read or write, or a
 *     body shorter than CONTENT_LENGTH): the script is killed, cgi_run
 *     returns -1.
 * The 502 and 413 bodies say nothing about the script; res->error has the
 * detail for the log.  The child is always reaped by its pid.
 *
 * SIGPIPE: writing to a script that closed its stdin raises SIGPIPE.  The
 * gateway ignores it, but so that cgi_run is safe in any process it blocks
 * SIGPIPE in the calling thread while it runs and discards the ones that
 * became pending meanwhile.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "cgi.h"
#include "log.h"

#if !defined(__GLIBC__) || __GLIBC__ < 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ < 34)
#error "gateway/cgi.c needs glibc 2.34 or later (close_range)"
#endif

/* ------------------------------------------------------------------ */
/* The environment                                                     */

/* A NULL-terminated "NAME=value" array; the strings live in one block.  A
 * small open-addressing table of name hashes finds duplicates in O(1), so
 * a request with many headers costs no quadratic scan. */
struct env {
	char **v;
	size_t n;
	char *str;
	size_t used;
	size_t *slot;           /* index + 1 into v, 0: empty */
	size_t nslot;           /* a power of two */
};

static int
env_name_ok(const char *s, size_t len)
{
	if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return 1;
}

/* Adds NAME=value unless NAME is there already.  The block and the table
 * were sized for everything env_build may add. */
static void
env_add(struct env *e, const char *name, size_t nlen, const char *val,
	size_t vlen)
{
	size_t mask = e->nslot - 1;
	size_t i = (size_t)rl_fnv1a(name, nlen) & mask;

	for (; e->slot[i] != 0; i = (i + 1) & mask) {
		const char *s = e->v[e->slot[i] - 1];
		if (strncmp(s, name, nlen) == 0 && s[nlen] == '=')
			return;
	}
	char *p = e->str + e->used;
	memcpy(p, name, nlen);
	p[nlen] = '=';
	memcpy(p + nlen + 1, val, vlen);
	p[nlen + 1 + vlen] = '\0';
	e->used += nlen + vlen + 2;
	e->v[e->n++] = p;
	e->v[e->n] = NULL;
	e->slot[i] = e->n;
}

static int
env_has(const struct env *e, const char *name)
{
	size_t nlen = strlen(name);
	size_t mask = e->nslot - 1;

	for (size_t i = (size_t)rl_fnv1a(name, nlen) & mask; e->slot[i] != 0;
	     i = (i + 1) & mask) {
		const char *s = e->v[e->slot[i] - 1];
		if (strncmp(s, name, nlen) == 0 && s[nlen] == '=')
			return 1;
	}
	return 0;
}

static void
env_free(struct env *e)
{
	free(e->v);
	free(e->str);
	free(e->slot);
}

static int
skip_name(const char *name, size_t len)
{
	return !env_name_ok(name, len) ||
	       (len == 10 && memcmp(name, "HTTP_PROXY", 10) == 0);
}

static void
env_build(struct env *e, const char *script, const struct rl_param *params,
	  size_t nparams, const struct proxy_spec *spec)
{
	static const char gi[] = "GATEWAY_INTERFACE";
	size_t count = 3 + nparams + spec->nextra_env;
	size_t bytes = sizeof("SCRIPT_FILENAME=") + strlen(script) +
		       sizeof("GATEWAY_INTERFACE=CGI/1.1") +
		       sizeof("PATH=" CGI_DEFAULT_PATH);

	for (size_t i = 0; i < nparams; i++)
		bytes += params[i].name_len + params[i].value_len + 2;
	for (size_t i = 0; i < spec->nextra_env; i++)
		bytes += strlen(spec->extra_env[i]) + 1;
	memset(e, 0, sizeof(*e));
	e->v = log_xrealloc(NULL, (count + 1) * sizeof(*e->v));
	e->v[0] = NULL;
	e->str = log_xrealloc(NULL, bytes);
	e->nslot = 16;
	while (e->nslot < 2 * count)
		e->nslot *= 2;
	e->slot = log_xrealloc(NULL, e->nslot * sizeof(*e->slot));
	memset(e->slot, 0, e->nslot * sizeof(*e->slot));

	env_add(e, "SCRIPT_FILENAME", 15, script, strlen(script));
	for (size_t i = 0; i < spec->nextra_env; i++) {
		const char *s = spec->extra_env[i];
		const char *eq = strchr(s, '=');
		if (eq == NULL || skip_name(s, (size_t)(eq - s)))
			continue;
		env_add(e, s, (size_t)(eq - s), eq + 1, strlen(eq + 1));
	}
	for (size_t i = 0; i < nparams; i++) {
		const struct rl_param *p = &params[i];
		if (skip_name(p->name, p->name_len) ||
		    (p->value_len > 0 && memchr(p->value, '\0', p->value_len) != NULL))
			continue;
		env_add(e, p->name, p->name_len, p->value ? p->value : "",
			p->value_len);
	}
	if (!env_has(e, gi))
		env_add(e, gi, sizeof(gi) - 1, "CGI/1.1", 7);
	if (!env_has(e, "PATH"))
		env_add(e, "PATH", 4, CGI_DEFAULT_PATH, strlen(CGI_DEFAULT_PATH));
}

/* ------------------------------------------------------------------ */
/* Starting and stopping the script                                    */

/* Moves an O_CLOEXEC fd to 3 or above, so that dup2 onto 0 and 1 in the
 * child cannot clobber it (the gateway may run with fd 0, 1 or 2 closed). */
static int
fd_above_stdio(int fd)
{
	if (fd < 0 || fd > 2)
		return fd;
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	int e = errno;
	close(fd);
	errno = e;
	return nfd;
}

static int
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Two pipes, every end O_CLOEXEC and above 2: p[0] the script's stdin
 * (read end, write end), p[1] its stdout.  Returns 0 or an errno. */
static int
make_pipes(int in[2], int out[2])
{
	in[0] = in[1] = out[0] = out[1] = -1;
	if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0)
		goto fail;
	for (int i = 0; i < 2; i++) {
		if ((in[i] = fd_above_stdio(in[i])) < 0 ||
		    (out[i] = fd_above_stdio(out[i])) < 0)
			goto fail;
	}
	if (set_nonblock(in[1]) != 0 || set_nonblock(out[0]) != 0)
		goto fail;
	return 0;
fail:;
	int e = errno;
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	return e ? e : EMFILE;
}

/* Closes the fds lo..hi.  close_range where the kernel has it (5.9) and
 * lets us (a seccomp filter may refuse it); else one by one below maxfd,
 * the descriptor limit read before the vfork. */
static void
close_fds(unsigned lo, unsigned hi, long maxfd)
{
	if (lo > hi || close_range(lo, hi, 0) == 0)
		return;
	for (long fd = lo; fd <= (long)hi && fd < maxfd; fd++)
		close((int)fd);
}

/* The child's side of spawn(), between vfork and exec: async-signal-safe
 * system calls only (the gateway has other threads, whose locks may be
 * held).  Reports a failure as its errno on ep and exits 127. */
static void __attribute__((noreturn))
spawn_child(const char *path, const char *dir, char *const envp[], int in_r,
	    int out_w, int need_null, int ep, pid_t parent, long maxfd)
{
	char *argv[2] = { (char *)path, NULL };
	struct sigaction dfl;
	sigset_t none;
	int e;

	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);   /* fails for glibc's own: fine */
	/* a process group of its own: a timeout or a stop kills the script
	 * and what it started */
	if (setpgid(0, 0) != 0)
		goto fail;
	/* killed by the kernel when the worker thread that started it ends,
	 * SIGKILL of the gateway included (mod_fcgid sends one ~9 s into a
	 * stop); a gateway that died before this line is seen by getppid */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
		goto fail;
	if (getppid() != parent) {
		errno = ESRCH;
		goto fail;
	}
	if (dup2(in_r, 0) < 0 || dup2(out_w, 1) < 0)
		goto fail;
	if (need_null) {
		int fd = open("/dev/null", O_WRONLY);
		if (fd < 0 || (fd != 2 && (dup2(fd, 2) < 0 || close(fd) != 0)))
			goto fail;
	}
	/* every fd from 3 up closed but ep (close-on-exec: it reports a
	 * failed exec, and a successful one closes it) */
	close_fds(3, (unsigned)ep - 1, maxfd);
	close_fds((unsigned)ep + 1, ~0u, maxfd);
	if (chdir(dir) != 0)
		goto fail;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(path, argv, envp);
fail:
	e = errno;
	while (write(ep, &e, sizeof(e)) < 0 && errno == EINTR)
		;
	_exit(127);
}

/* vfork, the child going straight on to spawn_child.  In a function of
 * its own, so that nothing of the caller's is live across the vfork. */
static pid_t
vfork_child(const char *path, const char *dir, char *const envp[], int in_r,
	    int out_w, int need_null, int ep, pid_t parent, long maxfd)
{
	pid_t pid = vfork();

	if (pid == 0)
		spawn_child(path, dir, envp, in_r, out_w, need_null, ep,
			    parent, maxfd);
	return pid;
}

/* Starts the script; returns 0, or an errno (also a failed chdir or exec,
 * reported by the child on a close-on-exec pipe, as posix_spawn would). */
static int
spawn(pid_t *pid, const char *path, const char *dir, char *const envp[],
      int in_r, int out_w)
{
	int need_null = fcntl(2, F_GETFD) < 0;
	pid_t parent = getpid();
	long maxfd = sysconf(_SC_OPEN_MAX);
	sigset_t all, old;
	int ep[2], e = 0;
	ssize_t n;

	if (pipe2(ep, O_CLOEXEC) != 0)
		return errno;
	if ((ep[0] = fd_above_stdio(ep[0])) < 0 ||
	    (ep[1] = fd_above_stdio(ep[1])) < 0) {
		e = errno;
		if (ep[0] >= 0)
			close(ep[0]);
		if (ep[1] >= 0)
			close(ep[1]);
		return e;
	}
	/* no handler of ours may run in the child */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	*pid = vfork_child(path, dir, envp, in_r, out_w, need_null, ep[1],
			   parent, maxfd < 0 ? 65536 : maxfd);
	if (*pid < 0)
		e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	close(ep[1]);
	if (*pid > 0) {
		while ((n = read(ep[0], &e, sizeof(e))) < 0 && errno == EINTR)
			;
		if (n == (ssize_t)sizeof(e)) {
			/* not started: reap the child that reported it */
			while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
				;
			*pid = -1;
			if (e == 0)
				e = EIO;        /* never "started" with no pid */
		} else {
			e = 0;
		}
	}
	close(ep[0]);
	return e;
}

/* One request's state. */
struct run {
	const struct proxy_spec *spec;
	struct proxy_client *c;
	struct proxy_result *res;
	pid_t pid;
	int reaped;
	int wstatus;            /* valid when reaped and wstatus_known */
	int wstatus_known;
	int in_fd, out_fd;      /* our ends, -1 when closed */
	int64_t deadline;       /* CLOCK_MONOTONIC ms; 0: none */
	uint64_t read_total;    /* body bytes read from the client */
	int body_eof;           /* no more body will go to the script */
	char *inbuf;            /* CGI_BODY_CHUNK bytes */
	size_t in_off, in_len;  /* read from the client, not yet written */
	char *outbuf;           /* CGI_OUT_CHUNK bytes */
	struct proxy_head head;
	struct respond_buf rb;
	struct run *prev, *next;        /* in the running list while its
					   child may be unreaped */
	pthread_t starter;      /* the thread that started it: its death
				   signal comes when that thread ends */
	int detached;           /* a copy that outlives the request */
	int killed;             /* by kill_running (under running_mu) */
};

/* Every run whose script has been started and not yet reaped, so that a
 * stopping gateway can kill them all (cgi_kill_all) instead of leaving
 * them behind.  A run leaves the list under the lock before its child is
 * reaped (reap() waits with WNOWAIT first), so a pid in the list is never
 * one the kernel could have given to another process. */
static pthread_mutex_t running_mu = PTHREAD_MUTEX_INITIALIZER;
static struct run *running;

static void
running_add(struct run *r)
{
	pthread_mutex_lock(&running_mu);
	r->prev = NULL;
	r->next = running;
	if (running != NULL)
		running->prev = r;
	running = r;
	pthread_mutex_unlock(&running_mu);
}

static void
running_remove(struct run *r)
{
	pthread_mutex_lock(&running_mu);
	if (r->prev != NULL)
		r->prev->next = r->next;
	else if (running == r)
		running = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	pthread_mutex_unlock(&running_mu);
}

/* SIGKILL to every script in the list not killed yet (only those left
 * working after their answer when detached_only, only those the calling
 * thread started when mine_only); how many. */
static unsigned
kill_running(int detached_only, int mine_only)
{
	unsigned n = 0;
	pthread_t me = pthread_self();

	pthread_mutex_lock(&running_mu);
	for (struct run *r = running; r != NULL; r = r->next) {
		if ((detached_only && !r->detached) ||
		    (mine_only && !pthread_equal(r->starter, me)) || r->killed)
			continue;       /* dying already: not counted twice */
		kill(-r->pid, SIGKILL);
		kill(r->pid, SIGKILL);
		r->killed = 1;
		n++;
	}
	pthread_mutex_unlock(&running_mu);
	return n;
}

unsigned
cgi_kill_all(void)
{
	return kill_running(0, 0);
}

unsigned
cgi_kill_detached(void)
{
	return kill_running(1, 0);
}

unsigned
cgi_kill_detached_here(void)
{
	return kill_running(1, 1);
}

unsigned
cgi_started_here(void)
{
	unsigned n = 0;
	pthread_t me = pthread_self();

	pthread_mutex_lock(&running_mu);
	for (struct run *r = running; r != NULL; r = r->next)
		n += pthread_equal(r->starter, me) != 0;
	pthread_mutex_unlock(&running_mu);
	return n;
}

static void
close_fd(int *fd)
{
	if (*fd >= 0) {
		close(*fd);
		*fd = -1;
	}
}

/* Kill the script's process group (and the script itself, in case it
 * left the group).  Safe until the child is reaped: its pid, and so its
 * group id, cannot be reused before. */
static void
kill_script(struct run *r)
{
	if (r->reaped)
		return;
	kill(-r->pid, SIGKILL);
	kill(r->pid, SIGKILL);
}

/* Wait for the child until deadline (CLOCK_MONOTONIC ms; 0: as long as it
 * takes).  Returns 0 once reaped, -1 when the deadline passed first. */
static int
reap(struct run *r, int64_t deadline)
{
	int pause_ms = 1;

	while (!r->reaped) {
		int st = 0;
		siginfo_t si;
		/* see that it exited without reaping it, leave the running
		 * list, then reap: cgi_kill_all never signals a reaped pid */
		memset(&si, 0, sizeof(si));
		int w = waitid(P_PID, (id_t)r->pid, &si,
			       WEXITED | WNOWAIT | (deadline ? WNOHANG : 0));
		if (w == 0 && si.si_pid == r->pid) {
			/* Killed by SIGKILL: ours kill the process group
			 * already, but the death signal (PR_SET_PDEATHSIG)
			 * the kernel sends when the worker thread that
			 * started the script ends -- at a stop, before
			 * cgi_kill_all -- kills the script alone, and what it
			 * started would live on (found as a test that failed
			 * one run in 15 under valgrind).  Its group goes too,
			 * while the script is unreaped and the group id
			 * cannot have been reused. */
			if (si.si_code == CLD_KILLED && si.si_status == SIGKILL)
				kill(-r->pid, SIGKILL);
			running_remove(r);
			pid_t p;
			while ((p = waitpid(r->pid, &st, 0)) < 0 && errno == EINTR)
				;
			r->reaped = 1;
			r->wstatus = st;
			r->wstatus_known = p == r->pid;
			break;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			/* ECHILD: SIGCHLD is ignored or another thread reaped
			 * it (see cgi.h); the status is lost. */
			running_remove(r);
			r->reaped = 1;
			break;
		}
		int64_t left = deadline - clock_mono_ms();
		if (left <= 0)
			return -1;
		poll(NULL, 0, (int)(left < pause_ms ? left : pause_ms));
		if (pause_ms < 10)
			pause_ms *= 2;
	}
	return 0;
}

static void
kill_and_reap(struct run *r)
{
	kill_script(r);
	reap(r, 0);
}

/* "exited with status 3", "killed by signal 11", into buf. */
static const char *
describe_exit(const struct run *r, char *buf, size_t cap)
{
	if (!r->wstatus_known)
		snprintf(buf, cap, "exited (status unknown: SIGCHLD ignored?)");
	else if (WIFSIGNALED(r->wstatus))
		snprintf(buf, cap, "killed by signal %d", WTERMSIG(r->wstatus));
	else
		snprintf(buf, cap, "exited with status %d", WEXITSTATUS(r->wstatus));
	return buf;
}

/* Whether the script has exited, seen without reaping it (WNOWAIT): its
 * pid, and so its process group id, stay reserved for kill_script. */
static int
exited_unreaped(const struct run *r)
{
	siginfo_t si;

	if (r->reaped)
		return 1;
	memset(&si, 0, sizeof(si));
	while (waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
		if (errno != EINTR)
			return 0;
	}
	return si.si_pid == r->pid;
}

static int
exit_ok(const struct run *r)
{
	return !r->wstatus_known ||
	       (WIFEXITED(r->wstatus) && WEXITSTATUS(r->wstatus) == 0);
}

/* ------------------------------------------------------------------ */
/* The request                                                         */

enum end {
	END_NONE = 0,
	END_EOF,                /* the script closed its output */
	END_TIMEOUT,
	END_HEAD_BAD,           /* res->error set */
	END_TOO_LARGE,
	END_CLIENT_GONE,        /* res->error set */
	END_FAILED              /* poll failed; res->error set */
};

/* Our own answer (502 or 413) when no head was sent yet.  Returns 0, or -1
 * when the client went away. */
static int
send_error(struct run *r, int status)
{
	if (status == 413)
		respond_too_large(&r->rb, r->spec->error_format);
	else
		respond_bad_gateway(&r->rb, r->spec->error_format);
	if (proxy_write(r->c, r->rb.data, r->rb.len, &r->deadline) != 0) {
		r->res->client_gone = 1;
		return -1;
	}
	r->res->status = status;
	return 0;
}

static enum end
client_gone(struct run *r, const char *why)
{
	snprintf(r->res->error, sizeof(r->res->error), "%s", why);
	return END_CLIENT_GONE;
}

static enum end
on_output(struct run *r, const char *data, size_t len)
{
	struct proxy_result *res = r->res;

	if (!r->head.done) {
		size_t used;
		char msg[200];
		int h = proxy_head_feed(&r->head, data, len, &used, msg, sizeof(msg));
		if (h < 0) {
			snprintf(res->error, sizeof(res->error), "script output: %s", msg);
			return END_HEAD_BAD;
		}
		if (h == 0)
			return END_NONE;
		proxy_head_render(&r->head, r->spec->extra_headers,
				  r->spec->extra_len, &r->rb);
		if (proxy_write(r->c, r->rb.data, r->rb.len, &r->deadline) != 0)
			return client_gone(r, "client went away before the response head was sent");
		res->head_sent = 1;
		res->status = r->head.status;
		data += used;
		len -= used;
	}
	if (len > 0) {
		if (proxy_write(r->c, data, len, &r->deadline) != 0)
			return client_gone(r, "client went away during the response body");
		res->body_out += len;
	}
	return END_NONE;
}

static enum end
feed_input(struct run *r, short revents)
{
	const struct proxy_spec *spec = r->spec;

	if (r->in_len == 0 && !r->body_eof && !(revents & POLLERR)) {
		size_t cap = CGI_BODY_CHUNK;
		if (spec->content_length > 0) {
			uint64_t rem = spec->content_length - r->read_total;
			if (rem < cap)
				cap = (size_t)rem;
		} else if (spec->max_body > 0 &&
			   spec->max_body - r->read_total + 1 < cap) {
			cap = (size_t)(spec->max_body - r->read_total + 1);
		}
		long k = proxy_read(r->c, r->inbuf, cap, &r->deadline);
		if (k < 0)
			return client_gone(r, "client went away while sending the request body");
		if (k == 0) {
			if (r->read_total < spec->content_length) {
				snprintf(r->res->error, sizeof(r->res->error),
					 "request body ended after %llu of %llu bytes",
					 (unsigned long long)r->read_total,
					 (unsigned long long)spec->content_length);
				return END_CLIENT_GONE;
			}
			r->body_eof = 1;
		} else {
			if ((size_t)k > cap)
				k = (long)cap;  /* a broken reader: never past cap */
			r->read_total += (uint64_t)k;
			r->in_off = 0;
			r->in_len = (size_t)k;
			if (spec->max_body > 0 && r->read_total > spec->max_body)
				return END_TOO_LARGE;
			if (spec->content_length > 0 &&
			    r->read_total == spec->content_length)
				r->body_eof = 1;
		}
	}
	if (r->in_len > 0) {
		ssize_t w = write(r->in_fd, r->inbuf + r->in_off, r->in_len);
		if (w > 0) {
			r->in_off += (size_t)w;
			r->in_len -= (size_t)w;
			r->res->body_in += (uint64_t)w;
		} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
			/* EPIPE: the script closed its stdin; the rest of the
			 * body is not for it. */
			r->in_len = 0;
			r->body_eof = 1;
		}
	} else if (revents & POLLERR) {
		r->body_eof = 1;
	}
	if (r->body_eof && r->in_len == 0)
		close_fd(&r->in_fd);
	return END_NONE;
}

/* Serve both pipes until the script has closed its output and has all the
 * body it will take (it read it all, closed its stdin or exited).  A
 * script may answer first and read its input after; closing its stdin
 * early would make a cut body look complete to it. */
static enum end
pump(struct run *r)
{
	for (;;) {
		struct pollfd p[3];
		int timeout = -1;

		if (r->out_fd < 0 && r->in_fd < 0)
			return END_EOF;
		if (r->deadline) {
			int64_t left = r->deadline - clock_mono_ms();
			if (left <= 0)
				return END_TIMEOUT;
			timeout = left > INT_MAX ? INT_MAX : (int)left;
		}
		/* poll skips an entry whose fd is -1. */
		p[0].fd = r->out_fd;
		p[0].events = POLLIN;
		p[0].revents = 0;
		p[1].fd = r->in_fd;
		p[1].events = POLLOUT;
		p[1].revents = 0;
		/* with the body read, the web server's connection: readable
		 * when it aborts the request or hangs up */
		p[2].fd = proxy_watch_fd(r->c, r->body_eof);
		p[2].events = POLLIN | POLLRDHUP;
		p[2].revents = 0;
		int k = poll(p, 3, timeout);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			snprintf(r->res->error, sizeof(r->res->error),
				 "poll on the script's pipes: %s", strerror(errno));
			return END_FAILED;
		}
		if (p[0].revents != 0) {
			ssize_t got = read(r->out_fd, r->outbuf, CGI_OUT_CHUNK);
			if (got > 0) {
				enum end e = on_output(r, r->outbuf, (size_t)got);
				if (e != END_NONE)
					return e;
			} else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
				close_fd(&r->out_fd);
			}
		}
		if (r->in_fd >= 0 && p[1].revents != 0) {
			enum end e = feed_input(r, p[1].revents);
			if (e != END_NONE)
				return e;
		}
		if (p[2].fd >= 0 && p[2].revents != 0 && proxy_gave_up(r->c))
			return client_gone(r, r->res->head_sent ?
					   "the web server gave up on the request during the response body" :
					   "the web server gave up on the request before the response head was sent");
	}
}

static atomic_uint detached;     /* scripts left running, CGI_DETACHED_MAX */

/* A script that closed its output but has not exited (it answered, then
 * goes on working): the answer is complete and ends now, as lighttpd and
 * Apache end it; the script is left to finish in the background.  A
 * thread of its own reaps it, or kills its process group at the run's
 * deadline (upstream-timeout) as before; a stop kills it with the others
 * (it stays in the running list, as a copy that outlives the request).
 * r counts as reaped afterwards, its exit status unknown.  Returns 0, or
 * -1 when no thread could be made (the caller waits as before). */
static void *
reaper_main(void *arg)
{
	struct run *d = arg;

	if (reap(d, d->deadline) != 0)
		kill_and_reap(d);
	free(d);
	atomic_fetch_sub(&detached, 1);
	return NULL;
}

static int
detach(struct run *r)
{
	if (atomic_fetch_add(&detached, 1) >= CGI_DETACHED_MAX) {
		atomic_fetch_sub(&detached, 1);
		return -1;
	}
	struct run *d = calloc(1, sizeof(*d));
	pthread_attr_t a;
	pthread_t t;
	int e;

	if (d == NULL) {
		atomic_fetch_sub(&detached, 1);
		return -1;
	}
	d->pid = r->pid;
	d->deadline = r->deadline;
	d->starter = r->starter;
	d->detached = 1;
	running_remove(r);
	running_add(d);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&t, &a, reaper_main, d);
	pthread_attr_destroy(&a);
	if (e != 0) {
		running_remove(d);
		running_add(r);
		free(d);
		atomic_fetch_sub(&detached, 1);
		return -1;
	}
	r->reaped = 1;
	r->wstatus_known = 0;
	return 0;
}

/* After the loop: the client's answer and res->error.  Returns cgi_run's
 * result. */
static int
finish(struct run *r, enum end e)
{
	struct proxy_result *res = r->res;
	const struct proxy_spec *spec = r->spec;
	char how[64];
	int rc = 0, exited;

	/* Kill before closing the script's stdin: an end of input would tell
	 * it that a cut body was complete. */
	switch (e) {
	case END_EOF: {         /* both pipes are closed */
		int64_t grace = clock_mono_ms() + CGI_EOF_GRACE_MS;
		if (res->head_sent &&
		    reap(r, r->deadline && r->deadline < grace ? r->deadline : grace) != 0 &&
		    (!r->deadline || clock_mono_ms() < r->deadline) &&
		    detach(r) == 0)
			break;  /* answered; the script goes on alone */
		if (reap(r, r->deadline) != 0) {
			kill_and_reap(r);
			snprintf(res->error, sizeof(res->error),
				 "script timed out after %lld ms (it closed its output but did not exit)",
				 (long long)spec->timeout_ms);
			if (!res->head_sent)
				rc = send_error(r, 502);
		} else if (!res->head_sent) {
			snprintf(res->error, sizeof(res->error),
				 "script %s before its response head was complete",
				 describe_exit(r, how, sizeof(how)));
			rc = send_error(r, 502);
		} else if (!exit_ok(r)) {
			snprintf(res->error, sizeof(res->error),
				 "script %s after its response head was sent",
				 describe_exit(r, how, sizeof(how)));
		}
		break;
	}
	case END_TIMEOUT:
		exited = exited_unreaped(r);
		kill_and_reap(r);
		if (exited) {
			/* The script itself was done: another process holds its
			 * output open (a child it left in the background), and
			 * the answer could only end now (Apache waits the
			 * same).  Say so, not "timed out". */
			if (res->head_sent)
				snprintf(res->error, sizeof(res->error),
					 "script %s, but another process (one it started?) kept its output open until the timeout (%lld ms): the response was ended there and its process group killed",
					 describe_exit(r, how, sizeof(how)),
					 (long long)spec->timeout_ms);
			else
				snprintf(res->error, sizeof(res->error),
					 "script %s before its response head was complete, and another process (one it started?) kept its output open until the timeout (%lld ms): its process group was killed",
					 describe_exit(r, how, sizeof(how)),
					 (long long)spec->timeout_ms);
		} else {
			snprintf(res->error, sizeof(res->error), "script timed out after %lld ms%s",
				 (long long)spec->timeout_ms,
				 res->head_sent ? "; response body cut short" : "");
		}
		if (!res->head_sent)
			rc = send_error(r, 502);
		break;
	case END_TOO_LARGE:
		kill_and_reap(r);
		res->too_large = 1;
		snprintf(res->error, sizeof(res->error),
			 "request body exceeds max_body (%llu bytes)%s",
			 (unsigned long long)spec->max_body,
			 res->head_sent ? "; script killed, response body cut short"
					: "; script killed");
		if (!res->head_sent)
			rc = send_error(r, 413);
		break;
	case END_HEAD_BAD:
	case END_FAILED:
		kill_and_reap(r);
		if (!res->head_sent)
			rc = send_error(r, 502);
		break;
	case END_CLIENT_GONE:
	case END_NONE:
		kill_and_reap(r);
		res->client_gone = 1;
		break;
	}
	close_fd(&r->in_fd);
	close_fd(&r->out_fd);
	if (res->client_gone) {
		if (res->error[0] == '\0')
			snprintf(res->error, sizeof(res->error),
				 "client went away before the response was sent");
		return -1;
	}
	return rc;
}

/* The absolute path of script into *abs (malloc'd) and its directory into
 * *dir (malloc'd).  Returns 0 or an errno. */
static int
script_paths(const char *script, char **abs, char **dir)
{
	size_t len = strlen(script);

	*abs = *dir = NULL;
	if (len == 0)
		return ENOENT;
	if (script[0] == '/') {
		*abs = log_xrealloc(NULL, len + 1);
		memcpy(*abs, script, len + 1);
	} else {
		char *cwd = getcwd(NULL, 0);
		if (cwd == NULL)
			return errno;
		size_t cl = strlen(cwd);
		*abs = log_xrealloc(NULL, cl + 1 + len + 1);
		memcpy(*abs, cwd, cl);
		(*abs)[cl] = '/';
		memcpy(*abs + cl + 1, script, len + 1);
		free(cwd);
	}
	const char *slash = strrchr(*abs, '/');
	size_t dl = slash == *abs ? 1 : (size_t)(slash - *abs);
	*dir = log_xrealloc(NULL, dl + 1);
	memcpy(*dir, *abs, dl);
	(*dir)[dl] = '\0';
	return 0;
}

static int
run(const char *script, const struct rl_param *params, size_t nparams,
    const struct proxy_spec *spec, struct proxy_client *c,
    struct proxy_result *res)
{
	struct run r;
	struct env env;
	char *abs = NULL, *dir = NULL;
	int in[2], out[2];
	int e, rc;

	memset(&r, 0, sizeof(r));
	r.spec = spec;
	r.c = c;
	r.res = res;
	r.in_fd = r.out_fd = -1;
	if (spec->timeout_ms > 0)
		r.deadline = clock_mono_ms() + spec->timeout_ms;
	respond_buf_init(&r.rb);
	proxy_head_init(&r.head);

	if (proxy_declared_too_large(spec, res)) {
		rc = send_error(&r, 413);
		goto out;
	}
	if ((e = script_paths(script, &abs, &dir)) != 0) {
		snprintf(res->error, sizeof(res->error), "cannot run script %s: %s",
			 script, strerror(e));
		rc = send_error(&r, 502);
		goto out;
	}
	/* spawn reports a failed exec too; asking first spares the fork in
	 * the common cases (a missing or non-executable script). */
	if (faccessat(AT_FDCWD, abs, X_OK, AT_EACCESS) != 0) {
		snprintf(res->error, sizeof(res->error), "cannot run script %s: %s",
			 abs, strerror(errno));
		rc = send_error(&r, 502);
		goto out;
	}
	if ((e = make_pipes(in, out)) != 0) {
		snprintf(res->error, sizeof(res->error),
			 "cannot run script %s: pipe: %s", abs, strerror(e));
		rc = send_error(&r, 502);
		goto out;
	}
	env_build(&env, abs, params, nparams, spec);
	e = spawn(&r.pid, abs, dir, env.v, in[0], out[1]);
	env_free(&env);
	close(in[0]);
	close(out[1]);
	r.in_fd = in[1];
	r.out_fd = out[0];
	r.starter = pthread_self();
	if (e == 0)
		running_add(&r);
	if (e != 0) {
		close_fd(&r.in_fd);
		close_fd(&r.out_fd);
		snprintf(res->error, sizeof(res->error), "cannot run script %s: %s",
			 abs, strerror(e));
		rc = send_error(&r, 502);
		goto out;
	}
	r.inbuf = log_xrealloc(NULL, CGI_BODY_CHUNK);
	r.outbuf = log_xrealloc(NULL, CGI_OUT_CHUNK);
	rc = finish(&r, pump(&r));
out:
	if (res->client_gone)
		rc = -1;
	free(r.inbuf);
	free(r.outbuf);
	free(abs);
	free(dir);
	proxy_head_free(&r.head);
	respond_buf_free(&r.rb);
	return rc;
}

int
cgi_run(const char *script, const struct rl_param *params, size_t nparams,
	const struct proxy_spec *spec, struct proxy_client *c,
	struct proxy_result *res)
{
	sigset_t pipe_set, old, pend;
	int was_pending;

	memset(res, 0, sizeof(*res));
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pend);
	was_pending = sigismember(&pend, SIGPIPE);

	int rc = run(script, params, nparams, spec, c, res);

	if (!was_pending) {
		struct timespec zero = { 0, 0 };
		sigpending(&pend);
		while (sigismember(&pend, SIGPIPE) &&
		       sigtimedwait(&pipe_set, NULL, &zero) == SIGPIPE)
			sigpending(&pend);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}
