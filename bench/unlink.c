/*
 * bench/unlink - what removing one spool file costs on this file system.
 *
 * Usage: bench/unlink [N [DIR]]
 *   N    files per kind (default 3000)
 *   DIR  where to make them (default: a fresh directory under $TMPDIR
 *        or /tmp, removed at the end); give one on the spool's file
 *        system to measure that one
 *
 * What it measures: for each kind of file, N files are made in one
 * directory, the page cache is left as it is (or the files are synced
 * with syncfs, as a submitted message's -H and -D are), then the N
 * files are unlinked one after the other; printed are the CPU time
 * (getrusage: user + system of this process) and the wall time per
 * unlink. The kinds are what a delivered message leaves behind:
 *   empty      an empty file (no data block at all)
 *   cached     300 bytes written, never synced (like a -J written during
 *              the run: delayed allocation, no block on disk yet)
 *   synced-s   200 bytes, synced (like a -H)
 *   synced-4k  4096 bytes, synced (like the -D of a 4 KB message)
 * A delivered message removes one -H, one -D and one -J, so
 * synced-s + synced-4k + cached is the file system's share of qrun's CPU
 * per message that no change to qrun can remove while the spool keeps
 * three files per message and syncs -H and -D at submission.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double wall_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct kind {
	const char *name;
	size_t size;
	int sync;
};

static int one_kind(const char *dir, const struct kind *k, long n, double *cpu_us,
		    double *wall_us)
{
	char path[PATH_MAX + 64], buf[4096];
	int dfd;

	memset(buf, 'x', sizeof(buf));
	snprintf(path, sizeof(path), "%s/%s", dir, k->name);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "bench/unlink: mkdir %s: %s\n", path, strerror(errno));
		return -1;
	}
	if ((dfd = open(path, O_RDONLY | O_DIRECTORY)) < 0)
		return -1;
	for (long i = 0; i < n; i++) {
		char name[32];
		int fd;

		snprintf(name, sizeof(name), "f%ld", i);
		fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || (k->size > 0 && write(fd, buf, k->size) != (ssize_t)k->size)) {
			fprintf(stderr, "bench/unlink: %s/%s: %s\n", path, name,
				strerror(errno));
			return -1;
		}
		close(fd);
	}
	if (k->sync && syncfs(dfd) < 0)
		return -1;
	double c0 = cpu_s(), t0 = wall_s();
	for (long i = 0; i < n; i++) {
		char name[32];

		snprintf(name, sizeof(name), "f%ld", i);
		if (unlinkat(dfd, name, 0) < 0)
			return -1;
	}
	*cpu_us = (cpu_s() - c0) * 1e6 / (double)n;
	*wall_us = (wall_s() - t0) * 1e6 / (double)n;
	close(dfd);
	rmdir(path);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct kind kinds[] = {
		{ "empty", 0, 1 },
		{ "cached", 300, 0 },
		{ "synced-s", 200, 1 },
		{ "synced-4k", 4096, 1 },
	};
	long n = argc > 1 ? atol(argv[1]) : 3000;
	char dir[PATH_MAX];
	int made = 0;
	double cpu[4], wall[4];

	if (n < 1 || n > 1000000) {
		fprintf(stderr, "usage: bench/unlink [N [DIR]]\n");
		return 64;
	}
	if (argc > 2) {
		snprintf(dir, sizeof(dir), "%s", argv[2]);
	} else {
		const char *t = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/qkit-bench-unlink-XXXXXX",
			 t && *t ? t : "/tmp");
		if (mkdtemp(dir) == NULL) {
			perror("bench/unlink: mkdtemp");
			return 1;
		}
		made = 1;
	}
	printf("bench/unlink: N=%ld files per kind in %s; CPU (getrusage) and wall "
	       "time per unlink, one after the other\n", n, dir);
	for (int i = 0; i < 4; i++) {
		if (one_kind(dir, &kinds[i], n, &cpu[i], &wall[i]) < 0) {
			fprintf(stderr, "bench/unlink: %s failed: %s\n", kinds[i].name,
				strerror(errno));
			return 1;
		}
		printf("  %-10s %5zu bytes%-13s CPU %6.1f us  wall %7.1f us\n",
		       kinds[i].name, kinds[i].size, kinds[i].sync ? ", synced" :
		       ", not synced", cpu[i], wall[i]);
	}
	printf("  a delivered message's -H + -D + -J (synced-s + synced-4k + cached): "
	       "CPU %.1f us, wall %.1f us\n", cpu[2] + cpu[3] + cpu[1],
	       wall[2] + wall[3] + wall[1]);
	if (made)
		rmdir(dir);
	return 0;
}
