/*
 * tests/fuzz/spool.h - the spool harness of the envelope and journal
 * targets (see spool.c).
 */
#ifndef FUZZ_SPOOL_H
#define FUZZ_SPOOL_H

#include "q/spool.h"

/* The process's spool (made on first use under fz_tmpdir()). */
struct q_spool *fz_spool(void);

/* Write -H (h), -D and -J (j, or no -J unless jpresent) of message id,
 * read it with and without the lock, rewrite -H through libq and read
 * it again, checking as spool.c says. Returns the envelope of the first
 * read (caller frees), or NULL when libq refused the files. */
struct q_env *fz_spool_check(const char *id, const void *h, size_t hlen,
			     const void *j, size_t jlen, bool jpresent);

/* Both paths (see spool.c): the in-memory parse for every input, the
 * spool for some (all with QKIT_FUZZ_FULL=1). Returns the envelope
 * (caller frees) or NULL when libq refused the files. */
struct q_env *fz_env_run(const char *id, const void *h, size_t hlen,
			 const void *j, size_t jlen, bool jpresent);

/* Invariants of a parsed envelope; equality of two envelopes. */
void fz_env_check(const struct q_env *e, const char *id);
void fz_env_same(const struct q_env *a, const struct q_env *b, const char *how);

#endif
