/*
 * q_spool-private.h - test-only entry points to q_spool.c's -H and -J
 * parsers and -H encoder (used by tests/fuzz). Not Q_API: hidden in
 * libq.so, reachable only from programs linked with libq's objects.
 * They are the static functions the spool itself uses, with no file
 * I/O around them.
 */
#ifndef Q_SPOOL_PRIVATE_H
#define Q_SPOOL_PRIVATE_H

#include "q/spool.h"

/* Parse the text of a -H file (data[0..len), not NUL-terminated) of
 * message id; path is only used in error texts. Returns 0 with *env_r
 * (free with q_env_free), -1 for a format error ("PATH:LINE: what" in
 * *error_r), -2 when out of memory. */
int q_spool_env_parse(const char *data, size_t len, const char *path,
		      const char *id, struct q_env **env_r,
		      const char **error_r);

/* Apply the text of a -J file to env, as reading a message does. 0 with
 * *good_r = the length up to the last complete line (a torn last line is
 * ignored), -1 for a format error (env may be partly updated), -2 when
 * out of memory. */
int q_spool_journal_apply(const char *data, size_t len, const char *path,
			  struct q_env *env, size_t *good_r,
			  const char **error_r);

/* Append env as the text of a -H file to b. 0, or -1 when out of memory. */
int q_spool_env_encode(const struct q_env *env, struct q_buf *b);

#endif
