/*
 * bench/deliver - how fast qrun empties a queue into a loopback sink.
 *
 * Usage: bench/deliver [N [D]] [--tls] [-P N] [--runs R] [--keep]
 *   N   messages (default 10000), about 4 KB each, 1 to 3 recipients
 *   D   recipient domains (default 50), all routed to one loopback sink
 *   --tls   the sink is tests/smtpd (no script: a sink) with STARTTLS (a cert is
 *           made with the openssl command); default: Postfix's smtp-sink
 *           from build/peers (tools/deps.sh test puts it there)
 *   -P N    qrun's parallel deliveries (default 4)
 *   --no-journal-sync  journal_sync = false in qrun's configuration (one
 *           sync at the end of the run instead of group syncs before
 *           removals: faster, but a power loss may repeat deliveries)
 *   --runs R  R times (fill and run; default 1), then the best and the
 *           median of the wall time and of the CPU per message (the
 *           disk's discard latency makes single runs vary by +-25% here)
 *
 * The spool is made in a fresh directory under $TMPDIR (default /tmp):
 * the file system there is part of what is measured.
 *
 * What it measures: the spool is filled through libq (not timed), the
 * page cache is warm, then ONE `qrun -P N --json` runs and is timed with
 * the wall clock; its CPU (user+system) and peak RSS come from wait4().
 * Printed: N, D, messages/s, qrun CPU per message, connections and TLS
 * handshakes (from qrun's own count), peak memory, and the sink's count.
 */
#include "config.h"
#include "q/spool.h"
#include "q/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char top[4096];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t spawn(const char *const argv[], const char *out, char **env)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv,
			     env ? env : environ);
	posix_spawn_file_actions_destroy(&fa);
	return r == 0 ? pid : -1;
}

static unsigned free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sin);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&sin, sizeof(sin));
	getsockname(fd, (struct sockaddr *)&sin, &sl);
	close(fd);
	return ntohs(sin.sin_port);
}

static int wait_port(unsigned port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int i = 0; i < 500; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (ok)
			return 0;
		usleep(10000);
	}
	return -1;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	char *buf = calloc(1, 1 << 20);
	size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
	(void)n;
	fclose(f);
	return buf;
}

static long jfield(const char *json, const char *name)
{
	char key[64];
	snprintf(key, sizeof(key), "\"%s\":", name);
	const char *p = json ? strstr(json, key) : NULL;
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

struct result {
	double wall, cpu_us, rate;
	bool ok;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* One fill of the spool and one timed qrun run. */
static bool jsync = true;   /* journal_sync in the configuration */

/* The block device's counters from /proc/diskstats (the line whose
 * major:minor is dev's): requests and 512-byte sectors written,
 * discards, cache flushes. ok is false when there is no such line
 * (tmpfs, or no /proc). */
struct dstat {
	bool ok;
	unsigned long long writes, wsect, discards, flushes;
};

static struct dstat disk_stat(dev_t dev)
{
	struct dstat d = { 0 };
	FILE *f = fopen("/proc/diskstats", "r");
	char line[512];

	if (f == NULL)
		return d;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned maj, min;
		unsigned long long v[17] = { 0 };
		int n = sscanf(line, "%u %u %*s %llu %llu %llu %llu %llu %llu %llu "
			       "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
			       &maj, &min, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
			       &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12],
			       &v[13], &v[14], &v[15], &v[16]);

		if (n < 13 || maj != major(dev) || min != minor(dev))
			continue;
		d.ok = true;
		d.writes = v[4];
		d.wsect = v[6];
		d.discards = n >= 14 ? v[11] : 0;
		d.flushes = n >= 18 ? v[15] : 0;
		break;
	}
	fclose(f);
	return d;
}

static int one_run(long n, long d, int par, bool tls, bool keep, struct result *res)
{
	const char *t = getenv("QKIT_TOP");
	if (t == NULL && getcwd(top, sizeof(top)) == NULL)
		return 1;
	if (t != NULL)
		snprintf(top, sizeof(top), "%s", t);

	/* under $TMPDIR (or /tmp): the file system measured is that one */
	char dir[4096];
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/qkit-bench-deliver-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		return 1;
	char path[8192], conf[8192], sinkout[8192];
	unsigned port = free_port();
	pid_t sink;
	snprintf(sinkout, sizeof(sinkout), "%s/sink.out", dir);
	if (tls) {
		char key[8192], cert[8192];
		snprintf(key, sizeof(key), "%s/key.pem", dir);
		snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		const char *ossl[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048",
				      "-nodes", "-days", "2", "-subj", "/CN=sink.test",
				      "-keyout", key, "-out", cert, NULL};
		snprintf(path, sizeof(path), "%s/openssl.out", dir);
		pid_t p = spawn(ossl, path, NULL);
		int st;
		waitpid(p, &st, 0);
		char listen[64], smtpd[8192];
		snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
		snprintf(smtpd, sizeof(smtpd), "%s/tests/smtpd", top);
		const char *sargv[] = {smtpd, "-l", listen, "-c", cert, "-k", key,
				       "-t", "600", NULL};
		sink = spawn(sargv, sinkout, NULL);
	} else {
		char listen[64], bin[8192], lib[8300];
		snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
		snprintf(bin, sizeof(bin), "%s/build/peers/usr/sbin/smtp-sink", top);
		snprintf(lib, sizeof(lib), "LD_LIBRARY_PATH=%s/build/peers/usr/lib/postfix", top);
		char *env[] = {lib, NULL};
		const char *sargv[] = {bin, "-u", "nobody", "-c", listen, "1000", NULL};
		sink = spawn(sargv, sinkout, env);
	}
	if (sink <= 0 || wait_port(port) != 0) {
		fprintf(stderr, "bench/deliver: the sink did not start (see %s)\n", sinkout);
		return 1;
	}

	snprintf(conf, sizeof(conf), "%s/qkit.conf", dir);
	FILE *cf = fopen(conf, "w");
	fprintf(cf, "spool_directory = %s/spool\nprimary_hostname = bench.test\n"
		"route * = 127.0.0.1:%u\nremote_max_parallel = %d\njournal_sync = %s\n",
		dir, port, par, jsync ? "true" : "false");
	fclose(cf);

	/* fill the spool through libq: not timed */
	snprintf(path, sizeof(path), "%s/spool", dir);
	struct q_spool *sp;
	const char *err;
	if (q_spool_open(path, Q_SPOOL_CREATE, &sp, &err) < 0) {
		fprintf(stderr, "bench/deliver: %s\n", err);
		return 1;
	}
	struct q_buf raw = {0}, canon = {0};
	q_buf_adds(&raw, "From: bench@sender.test\nSubject: benchmark\n\n");
	while (raw.len < 4000)
		q_buf_adds(&raw, "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n");
	if (q_msg_canonicalize(raw.data, raw.len, &canon, &err) < 0)
		return 1;
	long rcpts = 0;
	double t0 = now_s();
	for (long i = 0; i < n; i++) {
		char r[3][64];
		const char *rv[3];
		int k = 1 + (int)(i % 3);
		for (int j = 0; j < k; j++) {
			snprintf(r[j], sizeof(r[j]), "user%ld.%d@d%ld.test", i, j,
				 (i + j * 7) % d);
			rv[j] = r[j];
		}
		struct q_newmsg m = {.sender = "bench@sender.test", .rcpts = rv,
				     .nrcpt = (size_t)k, .data = canon.data, .len = canon.len};
		char id[Q_ID_LEN + 1];
		if (q_spool_create(sp, &m, Q_CREATE_NOSYNC, id, &err) < 0) {
			fprintf(stderr, "bench/deliver: %s\n", err);
			return 1;
		}
		rcpts += k;
	}
	q_spool_sync(sp, NULL);
	double tfill = now_s() - t0;
	q_spool_close(&sp);

	/* the timed run */
	char qrun[8192], out[8192], pstr[16];
	snprintf(qrun, sizeof(qrun), "%s/bin/qrun", top);
	snprintf(out, sizeof(out), "%s/qrun.out", dir);
	snprintf(pstr, sizeof(pstr), "%d", par);
	const char *qargv[] = {qrun, "-C", conf, "-P", pstr, "--json", NULL};
	struct stat dst;
	dev_t dev = stat(dir, &dst) == 0 ? dst.st_dev : 0;
	struct dstat d0 = disk_stat(dev);
	double t1 = now_s();
	pid_t q = spawn(qargv, out, NULL);
	int st;
	struct rusage ru;
	if (q <= 0 || wait4(q, &st, 0, &ru) != q) {
		fprintf(stderr, "bench/deliver: qrun did not run\n");
		return 1;
	}
	double wall = now_s() - t1;
	struct dstat d1 = disk_stat(dev);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	char *js = slurp(out);
	kill(sink, SIGTERM);
	struct rusage sru;
	double scpu = -1;
	if (wait4(sink, NULL, 0, &sru) == sink)
		scpu = (double)sru.ru_utime.tv_sec + (double)sru.ru_utime.tv_usec / 1e6 +
		       (double)sru.ru_stime.tv_sec + (double)sru.ru_stime.tv_usec / 1e6;

	printf("bench/deliver: N=%ld messages (%ld recipients) to D=%ld domains, "
	       "%s sink on loopback, qrun -P %d, journal_sync = %s\n", n, rcpts, d,
	       tls ? "STARTTLS (tests/smtpd sink)" : "plain (Postfix smtp-sink)", par,
	       jsync ? "true" : "false");
	printf("  how: spool filled through libq (%.2f s, not timed); one qrun run timed "
	       "(wall clock); CPU and peak RSS of qrun from wait4()\n", tfill);
	printf("  qrun exit %d, delivered %ld of %ld recipients, %ld deferred\n",
	       WIFEXITED(st) ? WEXITSTATUS(st) : -1, jfield(js, "delivered"), rcpts,
	       jfield(js, "deferred"));
	printf("  wall %.3f s  ->  %.0f messages/s\n", wall, (double)n / wall);
	printf("  qrun CPU %.3f s  ->  %.1f us per message\n", cpu, cpu * 1e6 / (double)n);
	if (scpu >= 0)
		printf("  the sink's CPU (whole life, wait4) %.3f s; qrun's share of the "
		       "machine's 2 x wall: %.0f%%\n", scpu, 100.0 * cpu / (2.0 * wall));
	printf("  connections %ld, TLS handshakes %ld (resumed %ld)\n",
	       jfield(js, "connections"), jfield(js, "tls"), jfield(js, "tls_resumed"));
	printf("  peak memory (max RSS) %.1f MB\n", (double)ru.ru_maxrss / 1024.0);
	if (d0.ok && d1.ok)
		printf("  the spool's disk during the run (/proc/diskstats, all its "
		       "users): %llu writes (%.1f MB), %llu discards, %llu cache "
		       "flushes\n", d1.writes - d0.writes,
		       (double)(d1.wsect - d0.wsect) * 512.0 / 1e6,
		       d1.discards - d0.discards, d1.flushes - d0.flushes);
	else
		printf("  the spool's disk: no /proc/diskstats line for it (tmpfs?)\n");
	if (jfield(js, "delivered") != rcpts)
		printf("  WARNING: not every recipient was delivered; qrun said: %s\n",
		       js ? js : "(nothing)");
	res->ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && jfield(js, "delivered") == rcpts;
	free(js);
	q_buf_free(&raw);
	q_buf_free(&canon);
	if (!keep) {
		const char *rm[] = {"rm", "-rf", dir, NULL};
		snprintf(path, sizeof(path), "/dev/null");
		pid_t p = spawn(rm, path, NULL);
		waitpid(p, NULL, 0);
	} else {
		printf("  kept: %s\n", dir);
	}
	res->wall = wall;
	res->cpu_us = cpu * 1e6 / (double)n;
	res->rate = (double)n / wall;
	return 0;
}

int main(int argc, char **argv)
{
	long n = 10000, d = 50;
	int par = 4, npos = 0, runs = 1;
	bool tls = false, keep = false;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--tls") == 0)
			tls = true;
		else if (strcmp(argv[i], "--keep") == 0)
			keep = true;
		else if (strcmp(argv[i], "--no-journal-sync") == 0)
			jsync = false;
		else if (strcmp(argv[i], "-P") == 0 && i + 1 < argc)
			par = atoi(argv[++i]);
		else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (npos == 0 && (npos = 1))
			n = atol(argv[i]);
		else
			d = atol(argv[i]);
	}
	if (n < 1 || d < 1 || par < 1 || runs < 1 || runs > 50) {
		fprintf(stderr, "usage: bench/deliver [N [D]] [--tls] [-P N] [--runs R] "
			"[--no-journal-sync] [--keep]\n");
		return 64;
	}
	double walls[50], cpus[50];
	int good = 0;
	for (int i = 0; i < runs; i++) {
		struct result r = {0};
		if (runs > 1)
			printf("run %d of %d\n", i + 1, runs);
		if (one_run(n, d, par, tls, keep, &r) != 0)
			return 1;
		if (!r.ok)
			continue;
		walls[good] = r.wall;
		cpus[good++] = r.cpu_us;
	}
	if (good == 0) {
		printf("no run delivered everything: no figures\n");
		return 1;
	}
	qsort(walls, (size_t)good, sizeof(double), cmp_double);
	qsort(cpus, (size_t)good, sizeof(double), cmp_double);
	double mw = walls[good / 2], mc = cpus[good / 2];
	printf("summary over %d run%s: wall best %.3f s (%.0f msg/s), median %.3f s "
	       "(%.0f msg/s); qrun CPU per message best %.1f us, median %.1f us\n",
	       good, good > 1 ? "s" : "", walls[0], (double)n / walls[0], mw,
	       (double)n / mw, cpus[0], mc);
	if (!tls && n == 10000 && d == 50)
		printf("targets (issue 3; median): 4,000 msg/s: %s; 200 us CPU/msg: %s\n",
		       (double)n / mw >= 4000 ? "met" : "MISSED",
		       mc <= 200 ? "met" : "MISSED");
	return 0;
}
