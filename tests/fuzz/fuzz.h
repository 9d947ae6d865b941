/*
 * tests/fuzz/fuzz.h - helpers shared by the libFuzzer targets
 * (tests/fuzz/fuzz_<name>.c; see tests/fuzz/README).
 *
 * A target checks properties of the library with FZ_CHECK: a failed
 * check prints what broke and aborts, which libFuzzer reports as a crash
 * and saves as an artifact. Harness failures (a temporary file that
 * cannot be written) abort too, with "harness:" in the text, so they
 * are never mistaken for a finding.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FZ_CHECK(cond, ...) do { \
	if (!(cond)) { \
		fprintf(stderr, "\nfuzz check failed at %s:%d: %s\n  ", \
			__FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		abort(); \
	} \
} while (0)

/* Abort with "harness: ..." (the environment failed, not the library). */
void fz_harness_fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/* A private 0700 directory for this process, made on first use under
 * /dev/shm (tmpfs) when it is usable, else under $TMPDIR or /tmp, and
 * removed at exit. Directories left by fuzzers that died (qkit-fuzz-PID-*
 * whose PID is gone) are removed when the next one starts. */
const char *fz_tmpdir(void);

/* Write a whole file relative to dirfd (created 0600, truncated). */
void fz_write_at(int dirfd, const char *name, const void *p, size_t n);

/* A malloc'd NUL-terminated copy of data[0..n) (its own allocation, so
 * that AddressSanitizer sees any read past the end). */
char *fz_strndup(const uint8_t *data, size_t n);

/* FNV-1a of data: a data-driven seed for split points and choices. */
uint32_t fz_hash(const uint8_t *data, size_t n);

/* xorshift32 step (state must not be 0). */
uint32_t fz_rand(uint32_t *state);

#endif
