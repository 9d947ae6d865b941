/*
 * tests/tlib.c - helpers for the CUnit suites (see tlib.h).
 *
 * Owns: the list of temporary directories (removed at exit by the process
 * that made them, so a forked child that exits does not remove its
 * parent's directories), the t_bin path table, t_run's process plumbing.
 * t_run: the parent keeps the write end of stdin non-blocking and polls it
 * with both read ends, so a child that writes a lot before reading its
 * input cannot deadlock us.  SIGPIPE is ignored in the test process (a
 * child that exits without reading its input gives EPIPE, not a signal);
 * the child gets the default disposition and an empty signal mask back.
 */
#include "config.h"
#include "tests/tlib.h"
#include "q/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* ---- temporary directories ---- */

#define T_MAX_TMPDIRS 256

static char *tmpdirs[T_MAX_TMPDIRS];
static size_t n_tmpdirs;
static pid_t tmp_owner;

static int rm_one(const char *path, const struct stat *st, int flag,
	struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static void tmp_cleanup(void)
{
	int keep = getenv("QKIT_KEEP_TMP") != NULL;

	for (size_t i = 0; i < n_tmpdirs; i++) {
		if (getpid() == tmp_owner) {
			if (keep)
				fprintf(stderr, "tlib: kept %s\n", tmpdirs[i]);
			else if (nftw(tmpdirs[i], rm_one, 16,
					FTW_DEPTH | FTW_PHYS) < 0)
				fprintf(stderr, "tlib: could not remove %s: %s\n",
					tmpdirs[i], strerror(errno));
		}
		free(tmpdirs[i]);
		tmpdirs[i] = NULL;
	}
	n_tmpdirs = 0;
}

char *t_tmpdir(void)
{
	static int registered;
	const char *base = getenv("TMPDIR");
	char path[PATH_MAX];
	char *copy;

	if (base == NULL || *base == '\0')
		base = "/tmp";
	if (n_tmpdirs == T_MAX_TMPDIRS) {
		fprintf(stderr, "tlib: more than %d temporary directories\n",
			T_MAX_TMPDIRS);
		return NULL;
	}
	if (snprintf(path, sizeof(path), "%s/qkit-test.XXXXXX", base) >=
			(int)sizeof(path)) {
		fprintf(stderr, "tlib: TMPDIR too long\n");
		return NULL;
	}
	if (mkdtemp(path) == NULL) {
		fprintf(stderr, "tlib: mkdtemp %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (chmod(path, 0700) < 0 || (copy = strdup(path)) == NULL) {
		fprintf(stderr, "tlib: %s: %s\n", path, strerror(errno));
		rmdir(path);
		return NULL;
	}
	if (!registered) {
		tmp_owner = getpid();
		atexit(tmp_cleanup);
		registered = 1;
	}
	if (getpid() != tmp_owner) {
		/* made in a forked child: it removes its own ones */
		tmp_cleanup();
		tmp_owner = getpid();
	}
	tmpdirs[n_tmpdirs++] = copy;
	return copy;
}

/* ---- running programs ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

void t_out_free(struct t_out *o)
{
	if (o == NULL)
		return;
	free(o->out);
	free(o->err);
	memset(o, 0, sizeof(*o));
}

/* environ with envp_extra's NAME=VALUE entries replacing or added;
 * the array is malloc'd, the strings are borrowed. */
static char **make_env(const char *const envp_extra[])
{
	size_t n = 0, m = 0, k = 0;
	char **env;

	while (environ[n] != NULL)
		n++;
	while (envp_extra != NULL && envp_extra[m] != NULL)
		m++;
	if ((env = calloc(n + m + 1, sizeof(*env))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(environ[i], '=');
		size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
		int replaced = 0;

		for (size_t j = 0; j < m && !replaced; j++)
			replaced = strncmp(envp_extra[j], environ[i], nl) == 0 &&
				envp_extra[j][nl] == '=';
		if (!replaced)
			env[k++] = environ[i];
	}
	for (size_t j = 0; j < m; j++)
		env[k++] = (char *)envp_extra[j];
	env[k] = NULL;
	return env;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int t_run_env(const char *const argv[], const char *const envp_extra[],
	const char *stdin_data, struct t_out *out)
{
	int in_p[2] = { -1, -1 }, out_p[2] = { -1, -1 }, err_p[2] = { -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int fa_ok = 0, attr_ok = 0, rc = -1, e, wst;
	struct buf ob = { 0 }, eb = { 0 };
	size_t in_len = stdin_data ? strlen(stdin_data) : 0, in_off = 0;
	char **env = NULL;
	sigset_t mask;
	pid_t pid = -1;

	memset(out, 0, sizeof(*out));
	if (argv == NULL || argv[0] == NULL) {
		fprintf(stderr, "t_run: no program (t_bin found nothing?)\n");
		return -1;
	}
	signal(SIGPIPE, SIG_IGN);
	if (pipe2(out_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0 ||
	    (stdin_data != NULL && pipe2(in_p, O_CLOEXEC) < 0)) {
		fprintf(stderr, "t_run: pipe: %s\n", strerror(errno));
		goto out;
	}
	if ((env = make_env(envp_extra)) == NULL) {
		fprintf(stderr, "t_run: out of memory\n");
		goto out;
	}
	if ((e = posix_spawn_file_actions_init(&fa)) != 0)
		goto spawn_err;
	fa_ok = 1;
	if (stdin_data != NULL)
		e = posix_spawn_file_actions_adddup2(&fa, in_p[0], 0);
	else
		e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
			O_RDONLY, 0);
	if (e == 0)
		e = posix_spawn_file_actions_adddup2(&fa, out_p[1], 1);
	if (e == 0)
		e = posix_spawn_file_actions_adddup2(&fa, err_p[1], 2);
	if (e != 0)
		goto spawn_err;
	if ((e = posix_spawnattr_init(&attr)) != 0)
		goto spawn_err;
	attr_ok = 1;
	sigemptyset(&mask);
	posix_spawnattr_setsigmask(&attr, &mask);
	sigaddset(&mask, SIGPIPE);
	posix_spawnattr_setsigdefault(&attr, &mask);
	posix_spawnattr_setflags(&attr,
		POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if (strchr(argv[0], '/') != NULL)
		e = posix_spawn(&pid, argv[0], &fa, &attr,
			(char *const *)argv, env);
	else
		e = posix_spawnp(&pid, argv[0], &fa, &attr,
			(char *const *)argv, env);
	if (e != 0)
		goto spawn_err;

	close(out_p[1]);
	out_p[1] = -1;
	close(err_p[1]);
	err_p[1] = -1;
	if (in_p[0] >= 0) {
		close(in_p[0]);
		in_p[0] = -1;
		if (in_len == 0) {
			close(in_p[1]);
			in_p[1] = -1;
		} else if (set_nonblock(in_p[1]) < 0) {
			fprintf(stderr, "t_run: fcntl: %s\n", strerror(errno));
			goto reap;
		}
	}

	/* Ends when both output pipes reached EOF; each iteration makes
	 * progress or waits in poll for the child. */
	while (out_p[0] >= 0 || err_p[0] >= 0) {
		struct pollfd pfd[3];
		int *fds[3] = { &out_p[0], &err_p[0], &in_p[1] };
		struct buf *bufs[2] = { &ob, &eb };

		for (int i = 0; i < 3; i++) {
			pfd[i].fd = *fds[i];
			pfd[i].events = i < 2 ? POLLIN : POLLOUT;
			pfd[i].revents = 0;
		}
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "t_run: poll: %s\n", strerror(errno));
			goto reap;
		}
		for (int i = 0; i < 2; i++) {
			char tmp[65536];
			ssize_t r;

			if (pfd[i].fd < 0 || pfd[i].revents == 0)
				continue;
			r = read(pfd[i].fd, tmp, sizeof(tmp));
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r < 0) {
				fprintf(stderr, "t_run: read: %s\n",
					strerror(errno));
				goto reap;
			}
			if (r == 0) {
				close(*fds[i]);
				*fds[i] = -1;
			} else if (buf_add(bufs[i], tmp, (size_t)r) < 0) {
				fprintf(stderr, "t_run: out of memory\n");
				goto reap;
			}
		}
		if (pfd[2].fd >= 0 && pfd[2].revents != 0) {
			ssize_t w = write(in_p[1], stdin_data + in_off,
				in_len - in_off);

			if (w < 0 && errno != EINTR && errno != EAGAIN) {
				/* EPIPE: the child does not want the rest */
				in_off = in_len;
			} else if (w > 0) {
				in_off += (size_t)w;
			}
			if (in_off == in_len) {
				close(in_p[1]);
				in_p[1] = -1;
			}
		}
	}
	rc = 0;
reap:
	if (in_p[1] >= 0) {
		close(in_p[1]);
		in_p[1] = -1;
	}
	if (out_p[0] >= 0) {
		close(out_p[0]);
		out_p[0] = -1;
	}
	if (err_p[0] >= 0) {
		close(err_p[0]);
		err_p[0] = -1;
	}
	while (waitpid(pid, &wst, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "t_run: waitpid: %s\n", strerror(errno));
			rc = -1;
			goto out;
		}
	}
	if (WIFEXITED(wst))
		out->status = WEXITSTATUS(wst);
	else if (WIFSIGNALED(wst))
		out->status = 128 + WTERMSIG(wst);
	else
		out->status = 255;
	goto out;
spawn_err:
	fprintf(stderr, "t_run: cannot run %s: %s\n", argv[0], strerror(e));
out:
	if (fa_ok)
		posix_spawn_file_actions_destroy(&fa);
	if (attr_ok)
		posix_spawnattr_destroy(&attr);
	for (int i = 0; i < 2; i++) {
		if (in_p[i] >= 0)
			close(in_p[i]);
		if (out_p[i] >= 0)
			close(out_p[i]);
		if (err_p[i] >= 0)
			close(err_p[i]);
	}
	free(env);
	if (rc == 0 && ((ob.p == NULL && buf_add(&ob, "", 0) < 0) ||
			(eb.p == NULL && buf_add(&eb, "", 0) < 0))) {
		fprintf(stderr, "t_run: out of memory\n");
		rc = -1;
	}
	if (rc == 0) {
		out->out = ob.p;
		out->outlen = ob.len;
		out->err = eb.p;
		out->errlen = eb.len;
	} else {
		free(ob.p);
		free(eb.p);
		int st = out->status;
		memset(out, 0, sizeof(*out));
		out->status = st;
	}
	return rc;
}

int t_run(const char *const argv[], const char *stdin_data, struct t_out *out)
{
	return t_run_env(argv, NULL, stdin_data, out);
}

/* ---- places ---- */

const char *t_top(void)
{
	static char cwd[PATH_MAX];
	const char *top = getenv("QKIT_TOP");

	if (top != NULL && *top != '\0')
		return top;
	if (cwd[0] == '\0' && getcwd(cwd, sizeof(cwd)) == NULL)
		strcpy(cwd, ".");
	return cwd;
}

#define T_MAX_BINS 32

const char *t_bin(const char *name)
{
	static char paths[T_MAX_BINS][PATH_MAX];
	static char names[T_MAX_BINS][64];
	static size_t n;
	static const char *const dirs[] = { "bin", "hints", "tui", "tests" };
	char path[PATH_MAX];

	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return paths[i];
	for (size_t d = 0; d < sizeof(dirs) / sizeof(dirs[0]); d++) {
		if (snprintf(path, sizeof(path), "%s/%s/%s", t_top(), dirs[d],
				name) >= (int)sizeof(path))
			continue;
		if (access(path, X_OK) != 0)
			continue;
		if (n == T_MAX_BINS || strlen(name) >= sizeof(names[0]))
			break;
		strcpy(names[n], name);
		strcpy(paths[n], path);
		return paths[n++];
	}
	fprintf(stderr, "t_bin: %s not found under %s/{bin,hints,tui,tests}\n",
		name, t_top());
	return NULL;
}

/* ---- files ---- */

int t_write_file(const char *path, const char *data)
{
	size_t len = strlen(data), off = 0;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	return close(fd) < 0 ? -1 : 0;
}

char *t_read_file(const char *path, size_t *len_r)
{
	struct buf b = { 0 };
	char tmp[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t r = read(fd, tmp, sizeof(tmp));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 || buf_add(&b, tmp, r < 0 ? 0 : (size_t)r) < 0) {
			close(fd);
			free(b.p);
			return NULL;
		}
		if (r == 0)
			break;
	}
	close(fd);
	if (len_r != NULL)
		*len_r = b.len;
	return b.p;
}

struct q_spool *t_new_spool(void)
{
	char path[PATH_MAX];
	struct q_spool *s = NULL;
	const char *err = NULL;
	char *t = t_tmpdir();

	if (t == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/spool", t);
	if (q_spool_open(path, Q_SPOOL_CREATE, &s, &err) < 0) {
		fprintf(stderr, "\nq_spool_open %s: %s\n", path, err);
		return NULL;
	}
	return s;
}
