/*
 * tests/fuzz/common.c - helpers shared by the fuzz targets (fuzz.h):
 * a per-process scratch directory on tmpfs, file writing, hashing.
 * Linked into every target; not a target itself (no fuzz_ prefix).
 */
#include "config.h"
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_PREFIX "qkit-fuzz-"

static char tmpdir[PATH_MAX];
static pid_t tmpdir_owner;

void fz_harness_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("\nharness: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void rm_tree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void tmpdir_cleanup(void)
{
	if (tmpdir[0] != '\0' && tmpdir_owner == getpid())
		rm_tree(tmpdir);
}

/* Remove base/qkit-fuzz-PID-* left by processes that are gone. */
static void remove_stale(const char *base)
{
	DIR *d = opendir(base);
	struct dirent *de;
	char path[PATH_MAX];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
			continue;
		pid = strtol(de->d_name + strlen(TMP_PREFIX), &end, 10);
		if (pid <= 0 || *end != '-')
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", base, de->d_name);
		rm_tree(path);
	}
	closedir(d);
}

const char *fz_tmpdir(void)
{
	const char *bases[3];
	size_t nb = 0;

	if (tmpdir[0] != '\0')
		return tmpdir;
	if (access("/dev/shm", W_OK | X_OK) == 0)
		bases[nb++] = "/dev/shm";
	if (getenv("TMPDIR") != NULL && getenv("TMPDIR")[0] == '/')
		bases[nb++] = getenv("TMPDIR");
	bases[nb++] = "/tmp";
	for (size_t i = 0; i < nb; i++) {
		remove_stale(bases[i]);
		snprintf(tmpdir, sizeof(tmpdir), "%s/" TMP_PREFIX "%ld-XXXXXX",
			 bases[i], (long)getpid());
		if (mkdtemp(tmpdir) != NULL) {
			tmpdir_owner = getpid();
			atexit(tmpdir_cleanup);
			return tmpdir;
		}
	}
	fz_harness_fail("cannot make a temporary directory: %s",
			strerror(errno));
}

void fz_write_at(int dirfd, const char *name, const void *p, size_t n)
{
	const char *s = p;
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
			O_NOFOLLOW, 0600);

	if (fd < 0)
		fz_harness_fail("create %s: %s", name, strerror(errno));
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fz_harness_fail("write %s: %s", name, strerror(errno));
		s += w;
		n -= (size_t)w;
	}
	if (close(fd) < 0)
		fz_harness_fail("close %s: %s", name, strerror(errno));
}

char *fz_strndup(const uint8_t *data, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		fz_harness_fail("out of memory");
	if (n > 0)
		memcpy(s, data, n);
	s[n] = '\0';
	return s;
}

uint32_t fz_hash(const uint8_t *data, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		h ^= data[i];
		h *= 16777619u;
	}
	return h;
}

uint32_t fz_rand(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}
