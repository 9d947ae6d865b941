/*
 * tests/tsrv.c - background servers for the integration tests (tsrv.h).
 */
#include "config.h"
#include "tsrv.h"
#include "tlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void nap_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

pid_t ts_spawn(const char *const argv[], const char *const env_extra[],
	       const char *outfile)
{
	posix_spawn_file_actions_t fa;
	size_t ne = 0, nx = 0;
	while (environ[ne])
		ne++;
	while (env_extra && env_extra[nx])
		nx++;
	char **env = calloc(ne + nx + 1, sizeof(*env));
	if (env == NULL)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < ne; i++) {
		bool replaced = false;
		for (size_t j = 0; j < nx; j++) {
			const char *eq = strchr(env_extra[j], '=');
			size_t l = eq ? (size_t)(eq - env_extra[j]) : 0;
			if (l && strncmp(environ[i], env_extra[j], l) == 0 &&
			    environ[i][l] == '=')
				replaced = true;
		}
		if (!replaced)
			env[k++] = environ[i];
	}
	for (size_t j = 0; j < nx; j++)
		env[k++] = (char *)env_extra[j];
	env[k] = NULL;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, outfile,
					 O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	pid_t pid;
	int ret = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, env);
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	return ret == 0 ? pid : -1;
}

int ts_wait_line(const char *file, const char *prefix, int ms, char *rest,
		 size_t size)
{
	size_t pl = strlen(prefix);
	for (int waited = 0; waited <= ms; waited += 20) {
		char *data = t_read_file(file, NULL);
		if (data != NULL) {
			for (char *p = data; p && *p;) {
				char *nl = strchr(p, '\n');
				if (strncmp(p, prefix, pl) == 0 && nl != NULL) {
					size_t l = (size_t)(nl - p) - pl;
					if (rest != NULL && size > 0) {
						if (l >= size)
							l = size - 1;
						memcpy(rest, p + pl, l);
						rest[l] = '\0';
					}
					free(data);
					return 0;
				}
				p = nl ? nl + 1 : NULL;
			}
			free(data);
		}
		nap_ms(20);
	}
	return -1;
}

int ts_wait_port(const char *ip, unsigned port, int ms)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &sin.sin_addr);
	for (int waited = 0; waited <= ms; waited += 20) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (ok)
			return 0;
		nap_ms(20);
	}
	return -1;
}

unsigned ts_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) < 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	close(fd);
	return ntohs(sin.sin_port);
}

int ts_stop(pid_t pid)
{
	int status;
	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	for (int waited = 0; waited < 5000; waited += 10) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status)
						 : 128 + WTERMSIG(status);
		if (r < 0)
			return -1;
		nap_ms(10);
	}
	kill(pid, SIGKILL);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return 128 + SIGKILL;
}

bool ts_running(pid_t pid)
{
	int status;
	return pid > 0 && waitpid(pid, &status, WNOHANG) == 0;
}

int ts_count(const char *file, const char *needle)
{
	char *data = t_read_file(file, NULL);
	if (data == NULL)
		return -1;
	int n = 0;
	for (char *p = data; p && *p;) {
		char *nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		if (strstr(p, needle))
			n++;
		p = nl ? nl + 1 : NULL;
	}
	free(data);
	return n;
}

/* ---- tests/smtpd ---- */

int ts_smtpd_start(struct ts_smtpd *s, const char *dir, const char *script,
		   const char *const extra[])
{
	const char *argv[32];
	char sc[PATH_MAX + 32], rest[128];
	int n = 0;

	memset(s, 0, sizeof(*s));
	s->pid = -1;
	snprintf(s->out, sizeof(s->out), "%s/srv.out", dir);
	snprintf(s->rec, sizeof(s->rec), "%s/srv.rec", dir);
	argv[n++] = t_bin("smtpd");
	argv[n++] = "-p";
	argv[n++] = "0";
	argv[n++] = "-t";
	argv[n++] = "20";
	argv[n++] = "-r";
	argv[n++] = s->rec;
	if (script != NULL) {
		snprintf(sc, sizeof(sc), "%s/srv.script", dir);
		if (t_write_file(sc, script) != 0)
			return -1;
		argv[n++] = "-s";
		argv[n++] = sc;
	}
	for (int i = 0; extra && extra[i] && n < 31; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (argv[0] == NULL)
		return -1;
	s->pid = ts_spawn(argv, NULL, s->out);
	if (s->pid <= 0)
		return -1;
	if (ts_wait_line(s->out, "READY ", 10000, rest, sizeof(rest)) != 0) {
		char *out = t_read_file(s->out, NULL);

		fprintf(stderr, "smtpd did not start: %s\n", out ? out : "");
		free(out);
		ts_stop(s->pid);
		s->pid = -1;
		return -1;
	}
	s->port = (unsigned)strtoul(rest, NULL, 10);
	return s->port ? 0 : -1;
}

void ts_smtpd_stop(struct ts_smtpd *s)
{
	char *out;

	if (s->pid <= 0)
		return;
	ts_stop(s->pid);
	s->pid = -1;
	out = t_read_file(s->out, NULL);
	s->stats[0] = '\0';
	for (char *p = out; p && (p = strstr(p, "STATS ")) != NULL; p++)
		snprintf(s->stats, sizeof(s->stats), "%.*s", (int)strcspn(p, "\n"), p);
	free(out);
}

long ts_smtpd_stat(const struct ts_smtpd *s, const char *name)
{
	char key[32];
	const char *p;

	snprintf(key, sizeof(key), " %s=", name);
	p = strstr(s->stats, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

int ts_smtpd_events(const struct ts_smtpd *s, const char *event,
		    const char *needle)
{
	char *rec = t_read_file(s->rec, NULL);
	char ev[40];
	int n = 0;

	snprintf(ev, sizeof(ev), " %s ", event);
	for (char *p = rec; p && *p;) {
		char *nl = strchr(p, '\n');

		if (nl)
			*nl = '\0';
		char *e = strstr(p, ev);
		/* the event is the second field */
		if (e != NULL && e == p + strspn(p, "0123456789") &&
		    (needle == NULL || strstr(e, needle) != NULL))
			n++;
		p = nl ? nl + 1 : NULL;
	}
	free(rec);
	return n;
}
