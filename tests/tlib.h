/*
 * tests/tlib.h - helpers shared by the CUnit suites.
 *
 * Programs run through t_run are started with posix_spawn (no shell);
 * both output streams are captured completely (poll, no deadlock), stdin
 * is fed from a string or /dev/null.  Temporary directories are removed at
 * exit of the process that made them (not of forked children) unless
 * QKIT_KEEP_TMP is set.  Not thread-safe.
 */
#ifndef QKIT_TLIB_H
#define QKIT_TLIB_H

#include <stddef.h>

/* A fresh 0700 directory under $TMPDIR (else /tmp), removed with all its
 * contents at exit unless $QKIT_KEEP_TMP is set.  The string is owned by
 * tlib.  NULL on failure (reason on stderr). */
char *t_tmpdir(void);

/* A new spool (q_spool_open with Q_SPOOL_CREATE) at "spool" in a fresh
 * t_tmpdir; close it with q_spool_close.  NULL on failure (reason on
 * stderr). */
struct q_spool;
struct q_spool *t_new_spool(void);

struct t_out {
	int status;       /* exit code, or 128+signal number */
	char *out;        /* stdout, NUL-terminated (malloc'd) */
	size_t outlen;
	char *err;        /* stderr, NUL-terminated (malloc'd) */
	size_t errlen;
};

/* Run argv[0] (a path; looked up in $PATH when it has no '/') with
 * arguments argv, stdin from stdin_data (NULL: /dev/null), capturing
 * stdout and stderr into *out.  Returns 0, or -1 when the program could
 * not be run (reason on stderr; *out is then empty).  Free *out with
 * t_out_free. */
int t_run(const char *const argv[], const char *stdin_data, struct t_out *out);

/* t_run with NAME=VALUE entries added to (or replacing in) the inherited
 * environment.  envp_extra is NULL-terminated; NULL means none. */
int t_run_env(const char *const argv[], const char *const envp_extra[],
	const char *stdin_data, struct t_out *out);

/* Free the buffers of *o and zero it; safe on a zeroed struct. */
void t_out_free(struct t_out *o);

/* The top build directory: $QKIT_TOP, else the current directory. */
const char *t_top(void);

/* Path of a built program (e.g. "qctl"), looked for in top/bin, top/hints,
 * top/tui and top/tests; NULL (with a note on stderr) if none is
 * executable.  The string lives in a static table until exit. */
const char *t_bin(const char *name);

/* Create or truncate path (mode 0600) with data.  0 or -1. */
int t_write_file(const char *path, const char *data);

/* The whole file, NUL-terminated, malloc'd (caller frees); its length in
 * *len_r when len_r is not NULL.  NULL on failure. */
char *t_read_file(const char *path, size_t *len_r);

#endif
