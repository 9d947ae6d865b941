/*
 * tests/crash/enospc.c - an LD_PRELOAD shim that makes the disk "full":
 * with QKIT_ENOSPC_AFTER=N in the environment, the first N calls that
 * write to a regular file (write, pwrite, writev, pwritev, fallocate,
 * posix_fallocate, a growing ftruncate) or sync one (fsync, fdatasync)
 * go through, and every later one fails with ENOSPC, as on a file
 * system that just filled up. Without the variable it does nothing.
 * Standard input, output and error (fds 0-2) are never failed, so a
 * program's error messages still reach the test.
 *
 * Used by tests/crash (part 3) where a tmpfs cannot be mounted (not
 * root, or a container without CAP_SYS_ADMIN). Built by `make
 * crash-build` as tests/crash/enospc.so.
 *
 * Weak spots: stdio's internal writes (fwrite, fprintf to a FILE) do not
 * go through the interposed write() in glibc, so they are not failed;
 * writes into mmap'd files are not seen. A real full disk still lets
 * in-place overwrites through; the shim fails them too (harsher).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static long limit = -2;        /* -2: not read yet; -1: off */
static long calls;

static long get_limit(void)
{
	long l = __atomic_load_n(&limit, __ATOMIC_RELAXED);

	if (l == -2) {
		const char *v = getenv("QKIT_ENOSPC_AFTER");

		l = v != NULL && *v ? strtol(v, NULL, 10) : -1;
		__atomic_store_n(&limit, l, __ATOMIC_RELAXED);
	}
	return l;
}

/* Should this call on fd fail? Counts the calls on regular files. */
static bool full(int fd)
{
	struct stat st;
	long l = get_limit();

	if (l < 0 || fd <= 2 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	return __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED) > l;
}

#define NEXT(name) \
	static __typeof__(name) *next_; \
	if (next_ == NULL) \
		next_ = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n)
{
	NEXT(write);
	if (n > 0 && full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	NEXT(pwrite);
	if (n > 0 && full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	NEXT(pwrite64);
	if (n > 0 && full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	NEXT(writev);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	NEXT(pwritev);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, iov, cnt, off);
}

int fsync(int fd)
{
	NEXT(fsync);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd);
}

int fdatasync(int fd)
{
	NEXT(fdatasync);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	NEXT(fallocate);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
	NEXT(posix_fallocate);
	if (full(fd))
		return ENOSPC;
	return next_(fd, off, len);
}

int ftruncate(int fd, off_t len)
{
	struct stat st;

	NEXT(ftruncate);
	if (fstat(fd, &st) == 0 && len > st.st_size && full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return next_(fd, len);
}
