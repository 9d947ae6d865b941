/*
 * tests/tsrv.h - servers for integration tests: spawn a program in the
 * background (output to a file), wait for it to be ready, stop it. Every
 * wait is bounded; nothing runs through a shell.
 */
#ifndef QKIT_TSRV_H
#define QKIT_TSRV_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* posix_spawn argv with extra NAME=VALUE env entries (env_extra may be
 * NULL); stdout and stderr go to outfile (created 0600), stdin is
 * /dev/null. Returns the pid or -1. */
pid_t ts_spawn(const char *const argv[], const char *const env_extra[],
	       const char *outfile);

/* Wait (at most ms) until a line starting with prefix appears in file;
 * copies the rest of that line into rest. 0 or -1 on time-out. */
int ts_wait_line(const char *file, const char *prefix, int ms, char *rest,
		 size_t size);

/* Wait (at most ms) until ip:port accepts a TCP connection. 0 or -1. */
int ts_wait_port(const char *ip, unsigned port, int ms);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
unsigned ts_free_port(void);

/* SIGTERM, wait up to 5 s, then SIGKILL; returns the exit status
 * (128+signal when killed), -1 when pid <= 0. */
int ts_stop(pid_t pid);

/* Is the process still running (not yet reaped)? */
bool ts_running(pid_t pid);

/* Count lines of file containing needle (-1 when unreadable). */
int ts_count(const char *file, const char *needle);

/* tests/smtpd in the background for one test: on 127.0.0.1 and a port
 * it picks (-p 0), a 20 s idle timeout, its output in DIR/srv.out, its
 * record in DIR/srv.rec, the script (NULL: none, a plain sink) written
 * to DIR/srv.script, then the extra arguments (NULL-terminated; may be
 * NULL). start: 0 once it printed READY (s->port set), or -1 with what
 * it printed on stderr. stop: SIGTERM, and its last "STATS ..." line
 * kept in s->stats. stat: a field of that line (-1 when absent).
 * events: record lines whose event (second field) is event and that
 * contain needle (NULL: any). */
struct ts_smtpd {
	pid_t pid;
	unsigned port;
	char out[PATH_MAX + 32];
	char rec[PATH_MAX + 32];
	char stats[256];
};
int ts_smtpd_start(struct ts_smtpd *s, const char *dir, const char *script,
		   const char *const extra[]);
void ts_smtpd_stop(struct ts_smtpd *s);
long ts_smtpd_stat(const struct ts_smtpd *s, const char *name);
int ts_smtpd_events(const struct ts_smtpd *s, const char *event,
		    const char *needle);

#endif
