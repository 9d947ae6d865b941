/*
 * bench/list.c - how fast is `qctl list` on a big queue?
 *
 *   bench/list [N [DIR]]
 *
 * Builds a spool of N messages (default 100,000) under DIR (default a
 * fresh directory under $TMPDIR or /tmp, removed at the end; a DIR given
 * is kept) through libq directly: one process, q_spool_create with
 * Q_CREATE_NOSYNC, then one q_spool_sync. Messages are 0.5 to 3 KiB with
 * 1 to 3 recipients over 50 domains; every 100th is frozen.
 *
 * Then it times, wall clock, `qctl -C CONF list`, `list -c` and
 * `list --json`, each started with posix_spawn and its output sent to
 * /dev/null: one untimed warm-up, then 3 runs; it prints the best and
 * the median. `list -c` is also run once with its output read back, to
 * check that it says N. When it can drop the page cache (writing "3" to
 * /proc/sys/vm/drop_caches, which needs root), it also times one run of
 * each right after a drop ("cold"); otherwise it says it could not.
 *
 * qctl is bin/qctl next to this program's directory (../bin/qctl), or
 * $QCTL. Targets (issue 2): list < 0.25 s and list -c < 20 ms at
 * N = 100,000. This is a benchmark, not a test: it prints figures and
 * marks each target met or missed; its exit status is 0 unless it could
 * not run.
 */
#include "config.h"
#include "q/spool.h"
#include "q/util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define RUNS 3

static char qctl[PATH_MAX];
static char conf[PATH_MAX];

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void find_qctl(const char *argv0)
{
	const char *env = getenv("QCTL");
	char self[PATH_MAX - 32], *slash;
	ssize_t n;

	if (env != NULL && *env != '\0') {
		snprintf(qctl, sizeof(qctl), "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
	} else {
		snprintf(self, sizeof(self), "%s", argv0);
	}
	slash = strrchr(self, '/');
	if (slash != NULL)
		*slash = '\0';
	else
		snprintf(self, sizeof(self), ".");
	snprintf(qctl, sizeof(qctl), "%s/../bin/qctl", self);
}

/* Run qctl -C conf ARGS; stdout to /dev/null or, when out != NULL, into
 * out (the first size-1 bytes). Returns the wall time in seconds, or -1
 * when it failed (message printed). */
static double run(const char *const args[], char *out, size_t size)
{
	const char *argv[16];
	posix_spawn_file_actions_t fa;
	int pfd[2] = { -1, -1 }, st;
	size_t n = 0, got = 0;
	double t0, t1;
	pid_t pid;

	argv[n++] = qctl;
	argv[n++] = "-C";
	argv[n++] = conf;
	for (size_t i = 0; args[i] != NULL && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	if (out != NULL) {
		if (pipe(pfd) < 0)
			return -1;
		posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
		posix_spawn_file_actions_addclose(&fa, pfd[0]);
		posix_spawn_file_actions_addclose(&fa, pfd[1]);
	} else {
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	}
	t0 = now_s();
	if (posix_spawn(&pid, qctl, &fa, NULL, (char *const *)argv, environ) != 0) {
		fprintf(stderr, "bench/list: cannot run %s: %s\n", qctl, strerror(errno));
		posix_spawn_file_actions_destroy(&fa);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	if (out != NULL) {
		ssize_t r;
		char sink[4096];

		close(pfd[1]);
		while ((r = read(pfd[0], got + 1 < size ? out + got : sink,
				 got + 1 < size ? size - 1 - got : sizeof(sink))) > 0)
			if (got + 1 < size)
				got += (size_t)r;
		close(pfd[0]);
		out[got] = '\0';
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	t1 = now_s();
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "bench/list: qctl %s failed (status %d)\n", args[0],
			WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return -1;
	}
	return t1 - t0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static bool drop_caches(void)
{
	int fd;
	bool ok;

	sync();
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ok = write(fd, "3\n", 2) == 2;
	close(fd);
	return ok;
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP || flag == FTW_D)
		return rmdir(path);
	return unlink(path);
}

static int build(const char *spooldir, long n)
{
	static const char words[] = "lorem ipsum dolor sit amet consectetur "
		"adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
		"magna aliqua ";
	struct q_spool *sp = NULL;
	struct q_buf msg = { 0 };
	const char *err = NULL;
	char r[3][64], sender[64], id[Q_ID_LEN + 1];
	const char *rcpts[3] = { r[0], r[1], r[2] };
	unsigned seed = 42;
	double t0 = now_s();

	if (q_spool_open(spooldir, Q_SPOOL_CREATE, &sp, &err) < 0) {
		fprintf(stderr, "bench/list: %s\n", err);
		return -1;
	}
	for (long i = 0; i < n; i++) {
		struct q_newmsg m;
		size_t body = 512 + (size_t)(rand_r(&seed) % 2560), nr;

		nr = 1 + (size_t)(rand_r(&seed) % 3);
		for (size_t k = 0; k < nr; k++)
			snprintf(r[k], sizeof(r[k]), "user%ld.%zu@d%u.example.com", i, k,
				 (unsigned)(rand_r(&seed) % 50));
		snprintf(sender, sizeof(sender), "sender%ld@example.org", i % 977);
		q_buf_reset(&msg);
		q_buf_printf(&msg, "From: <%s>\r\nTo: <%s>\r\nSubject: bench %ld\r\n"
			     "Message-ID: <%ld@bench.example.org>\r\n\r\n",
			     sender, r[0], i, i);
		while (msg.len < body) {
			q_buf_add(&msg, words, 72);
			q_buf_adds(&msg, "\r\n");
		}
		memset(&m, 0, sizeof(m));
		m.sender = sender;
		m.rcpts = rcpts;
		m.nrcpt = nr;
		m.data = msg.data;
		m.len = msg.len;
		m.flags = i % 100 == 99 ? Q_ENV_FROZEN : 0;
		if (q_spool_create(sp, &m, Q_CREATE_NOSYNC, id, &err) < 0) {
			fprintf(stderr, "bench/list: message %ld: %s\n", i, err);
			q_spool_close(&sp);
			q_buf_free(&msg);
			return -1;
		}
		if (i > 0 && i % 20000 == 0)
			fprintf(stderr, "  ... %ld messages\n", i);
	}
	if (q_spool_sync(sp, &err) < 0)
		fprintf(stderr, "bench/list: sync: %s\n", err);
	q_spool_close(&sp);
	q_buf_free(&msg);
	printf("built %ld messages in %.1f s (%.0f msg/s, one process, no fsync per "
	       "message, one syncfs at the end)\n", n, now_s() - t0,
	       (double)n / (now_s() - t0));
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *label;
		const char *args[4];
		double target;          /* seconds; 0 = none */
	} cmds[] = {
		{ "qctl list", { "list", NULL }, 0.25 },
		{ "qctl list -c", { "list", "-c", NULL }, 0.020 },
		{ "qctl list --json", { "list", "--json", NULL }, 0 },
	};
	long n = 100000;
	char dir[PATH_MAX - 32], spool[PATH_MAX], out[64];
	bool keep = false, cold;
	FILE *f;
	double t;

	setvbuf(stdout, NULL, _IOLBF, 0);     /* progress shows as it comes */
	if (argc > 1) {
		char *end;

		n = strtol(argv[1], &end, 10);
		if (*end != '\0' || n <= 0) {
			fprintf(stderr, "usage: bench/list [N [DIR]]\n");
			return 64;
		}
	}
	find_qctl(argv[0]);
	if (access(qctl, X_OK) < 0) {
		fprintf(stderr, "bench/list: %s: %s (run make first, or set QCTL)\n",
			qctl, strerror(errno));
		return 69;
	}
	if (argc > 2) {
		snprintf(dir, sizeof(dir), "%s", argv[2]);
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "bench/list: %s: %s\n", dir, strerror(errno));
			return 73;
		}
		keep = true;
	} else {
		const char *tmp = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/qkit-bench-list.XXXXXX",
			 tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
		if (mkdtemp(dir) == NULL) {
			fprintf(stderr, "bench/list: mkdtemp: %s\n", strerror(errno));
			return 73;
		}
	}
	snprintf(spool, sizeof(spool), "%s/spool", dir);
	snprintf(conf, sizeof(conf), "%s/qkit.conf", dir);
	f = fopen(conf, "w");
	if (f == NULL) {
		fprintf(stderr, "bench/list: %s: %s\n", conf, strerror(errno));
		return 73;
	}
	fprintf(f, "spool_directory = %s\n", spool);
	fclose(f);

	printf("bench/list: qctl list over a spool of %ld messages\n", n);
	printf("spool: %s\nqctl:  %s\n", spool, qctl);
	if (build(spool, n) < 0)
		return 70;

	{
		const char *const a[] = { "list", "-c", NULL };

		if (run(a, out, sizeof(out)) < 0)
			return 70;
		if (strtol(out, NULL, 10) != n)
			printf("WARNING: qctl list -c says %s, expected %ld\n",
			       strtok(out, "\n") != NULL ? out : "(nothing)", n);
		else
			printf("check: qctl list -c says %ld\n", n);
	}

	printf("\nwarm cache: wall clock per run (posix_spawn to exit, output to "
	       "/dev/null),\n1 warm-up then %d runs; best and median\n", RUNS);
	printf("%-20s %10s %10s %12s  %s\n", "command", "best", "median",
	       "msgs/s(best)", "target");
	for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
		double ts[RUNS];

		if (run(cmds[c].args, NULL, 0) < 0)
			return 70;
		for (int i = 0; i < RUNS; i++)
			if ((ts[i] = run(cmds[c].args, NULL, 0)) < 0)
				return 70;
		qsort(ts, RUNS, sizeof(ts[0]), cmp_double);
		printf("%-20s %8.1fms %8.1fms %12.0f  ", cmds[c].label, ts[0] * 1e3,
		       ts[RUNS / 2] * 1e3, (double)n / ts[0]);
		if (cmds[c].target > 0)
			printf("< %.0f ms: %s\n", cmds[c].target * 1e3,
			       ts[RUNS / 2] < cmds[c].target ? "met" : "MISSED");
		else
			printf("-\n");
	}

	cold = drop_caches();
	if (!cold) {
		printf("\ncold cache: not measured (cannot write "
		       "/proc/sys/vm/drop_caches: %s; needs root)\n", strerror(errno));
	} else {
		printf("\ncold cache: page cache dropped (sync; 3 > "
		       "/proc/sys/vm/drop_caches) before each single run\n");
		for (size_t c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++) {
			if (!drop_caches() || (t = run(cmds[c].args, NULL, 0)) < 0) {
				printf("%-20s failed\n", cmds[c].label);
				continue;
			}
			printf("%-20s %8.1fms\n", cmds[c].label, t * 1e3);
		}
	}

	if (!keep) {
		if (nftw(dir, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0)
			fprintf(stderr, "bench/list: could not remove %s: %s\n", dir,
				strerror(errno));
	} else {
		printf("\nspool kept in %s\n", dir);
	}
	return 0;
}
