/*
 * q_spool-private.h - test-only entry points to q_spool.c's -H and -J
 * parsers and -H encoder (used by tests/fuzz), and the spool functions
 * that only libq's runner uses. Not Q_API: hidden in libq.so, reachable
 * only from libq and programs linked with libq's objects.
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

/* ---- for the runner (libq/q_runner.c) ---- */

/* The locked message's -D descriptor (the one holding the lock; read it
 * with pread only) and its size when it was locked. Valid until unlock. */
int q_msg_data(struct q_msg *m, off_t *size_r);

/* Hand the removal of completed messages to a thread of the spool's own:
 * q_msg_commit of a message with nothing pending then returns at once;
 * the thread unlinks -H, -D, -J and the msglog, deletes the index
 * records in batches and only then closes -D, which releases the lock,
 * so no other process can take the message before it is gone. A process
 * killed before that leaves the files with a journal that says all is
 * done: the next run removes them. With group_sync, no message is
 * removed before a syncfs that began after it was handed over (one sync
 * every REAP_SYNC_MS for all that was journaled meanwhile): after a
 * power loss, no journaled delivery is repeated. q_spool_reaper_stop
 * (and q_spool_close) waits until every handed-over message is removed. */
int q_spool_reaper_start(struct q_spool *s, bool group_sync,
			 const char **error_r);
void q_spool_reaper_stop(struct q_spool *s);

#endif
