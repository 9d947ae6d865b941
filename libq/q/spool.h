/*
 * q/spool.h - the spool: message ids, atomic creation, envelopes,
 * per-message locks, the per-recipient journal, freeze/thaw/remove,
 * listing through the queue index.
 *
 * Layout under the spool directory (0700, files 0600):
 *   input/<c>/<id>-H   envelope (text, versioned, see q_spool.c)
 *   input/<c>/<id>-D   data: CRLF line ends, dot-stuffed, no final dot
 *   input/<c>/<id>-J   journal: one line per recipient result, fsynced
 *   msglog/<id>        human-readable delivery history
 *   corrupt/           garbled -H files moved aside, with their -D/-J
 *   tmp/               files being written (never listed)
 *   db/                the hints environment (q/hints.h), and
 *                      db/index-stamps (the listing's directory stamps)
 *   log/mainlog
 * <c> is the last character of the id's microsecond field
 * (id[Q_ID_SPLIT_POS], see q_id.c), which spreads messages evenly.
 *
 * The spool files are the truth; the index in the hints is a hint.
 */
#ifndef Q_SPOOL_H
#define Q_SPOOL_H

#include "q/common.h"
#include "q/util.h"

struct q_hints;

/* ---- message ids ----
 * "SSSSSS-UUUU-PPPP": seconds since the epoch, microseconds and pid, each
 * in base 62 (0-9A-Za-z, fixed width), so that ids sort by arrival as
 * strings, are unique across processes and are safe file names. */
#define Q_ID_LEN 16
#define Q_ID_SPLIT_POS 10    /* id[10]: the split directory character */
Q_API void q_id_new(char id[Q_ID_LEN + 1]);
Q_API bool q_id_valid(const char *id);
/* Arrival time encoded in a valid id (seconds). */
Q_API time_t q_id_time(const char *id);

/* ---- envelopes ---- */
enum q_rcpt_state {
	Q_RCPT_PENDING = 'P',
	Q_RCPT_DELIVERED = 'D',
	Q_RCPT_FAILED = 'F',     /* permanent failure; its bounce was queued,
				    or none is due (null sender, a bounce) */
	Q_RCPT_FAILED_OWED = 'X', /* permanent failure whose bounce is not
				    queued yet: a runner queues it (and then
				    journals F) before the message may go,
				    so a crash between the two never loses
				    the bounce (it may repeat it) */
};

struct q_rcpt {
	char *addr;
	char state;              /* enum q_rcpt_state */
	unsigned tries;          /* delivery attempts so far */
	time_t last_time;        /* time of the last result, 0 if none */
	int last_code;           /* SMTP code of the last result, 0 if none */
	char *host;              /* host of the last result, or NULL */
	char *last_error;        /* text of the last result, or NULL */
};

#define Q_ENV_FROZEN  0x01
#define Q_ENV_BOUNCE  0x02   /* this message is a bounce (DSN) */
#define Q_ENV_8BIT    0x04   /* the data has octets over 127: MAIL gets
				BODY=8BITMIME where offered (RFC 6152); set
				by q_spool_create from the data, never by
				the caller */
#define Q_ENV_KNOWN   (Q_ENV_FROZEN | Q_ENV_BOUNCE | Q_ENV_8BIT)

struct q_env {
	char id[Q_ID_LEN + 1];
	char *sender;            /* "" for the null sender */
	time_t arrival;
	uint64_t size;           /* bytes of -D */
	unsigned flags;          /* Q_ENV_* */
	char *frozen_reason;     /* NULL unless frozen with a reason */
	size_t nrcpt;
	struct q_rcpt *rcpt;
};

Q_API void q_env_free(struct q_env **env);
/* Number of recipients still pending. */
Q_API size_t q_env_pending(const struct q_env *env);
/* Number of failed recipients whose bounce is still owed (X). */
Q_API size_t q_env_owed(const struct q_env *env);

/* ---- the spool ---- */
struct q_spool;

#define Q_SPOOL_CREATE 0x01      /* create the directory tree if missing */

/* Open a spool. Refuses (-1, with the path in the text) a directory that
 * is writable by group or others, or not owned by the caller's uid.
 * The hints environment is opened lazily by q_spool_hints(). */
Q_API int q_spool_open(const char *dir, unsigned flags, struct q_spool **spool_r,
		       const char **error_r);
Q_API void q_spool_close(struct q_spool **spool);
Q_API const char *q_spool_dir(const struct q_spool *spool);

/* The hints environment of this spool (spool/db), opened on first use
 * with transport "smtp". Owned by the spool. */
Q_API int q_spool_hints(struct q_spool *spool, struct q_hints **hints_r,
			const char **error_r);

/* ---- creating a message ---- */
struct q_newmsg {
	const char *sender;           /* "" for <> */
	const char *const *rcpts;
	size_t nrcpt;
	const char *data;             /* canonical form (q_msg_canonicalize) */
	size_t len;
	unsigned flags;               /* Q_ENV_* to start with */
};

#define Q_CREATE_NOSYNC 0x01  /* no fsync (bulk loads; call q_spool_sync) */

/* Create a message atomically: -D is written (and fsynced) in
 * input/<c>/, an empty -J is created there, -H is written under tmp/,
 * fsynced and renamed into input/<c>/ (the commit point: a -D or -J
 * without -H is invisible), and the directory is fsynced. Then the index is
 * updated (a failure there is not an error: the index is a hint).
 * Addresses must already be checked. Writes the new id to id_r. */
Q_API int q_spool_create(struct q_spool *spool, const struct q_newmsg *m,
			 unsigned flags, char id_r[Q_ID_LEN + 1],
			 const char **error_r);
/* syncfs() the spool's file system (after Q_CREATE_NOSYNC loads). */
Q_API int q_spool_sync(struct q_spool *spool, const char **error_r);

/* ---- reading without a lock ---- */

/* Read the envelope of id, with its journal (if any) applied.
 * Returns 0, Q_NOTFOUND, or -1. A garbled or truncated -H is reported
 * as "PATH:LINE: what" and moved aside to corrupt/ (then -1). */
Q_API int q_spool_read(struct q_spool *spool, const char *id,
		       struct q_env **env_r, const char **error_r);

/* Path of one of the message's files: kind is 'H', 'D' or 'J'; or 'L'
 * for msglog/<id>. Writes into buf. Returns buf (an empty string when id
 * is not a valid id or kind is unknown). */
Q_API char *q_spool_path(const struct q_spool *spool, const char *id, char kind,
			 char *buf, size_t size);

/* Call fn for every message id on the spool (every input/<c>/<id>-H),
 * in no particular order. fn returns 0 to go on, 1 to stop, -1 on error
 * (passed through). This reads directories only, not files. */
typedef int q_spool_id_fn(const char *id, void *ctx);
Q_API int q_spool_scan(struct q_spool *spool, q_spool_id_fn *fn, void *ctx,
		       const char **error_r);

/* ---- locked access ----
 * A message is locked with an open-file-description lock (F_OFD_SETLK)
 * on its -D file. Every change (deliver, freeze, thaw, remove, edit)
 * needs the lock. */
struct q_msg;

/* Lock id. Returns 0, Q_NOTFOUND, Q_BUSY (another process holds it;
 * nothing changed), or -1. On success the envelope is read and any
 * journal left by an earlier (crashed) attempt is applied. */
Q_API int q_msg_lock(struct q_spool *spool, const char *id, struct q_msg **msg_r,
		     const char **error_r);
/* Unlock and free; changes not committed stay in the journal. */
Q_API void q_msg_unlock(struct q_msg **msg);

/* The envelope as it stands (journal entries applied). Owned by msg. */
Q_API struct q_env *q_msg_env(struct q_msg *msg);
/* A read-only fd on -D, positioned at 0 on return (valid until unlock). */
Q_API int q_msg_data_fd(struct q_msg *msg);

/* Journal one recipient's result: appends a line to -J and, unless
 * Q_JOURNAL_NOSYNC, fdatasyncs it before returning. Updates the
 * in-memory envelope: state 'D', 'F' or 'X' is final; 'P' records a
 * temporary failure (tries, code, host, text). The one change of a
 * final state: 'X' (bounce owed) to 'F' once the bounce is queued (code,
 * host and text are then ignored); anything else on a recipient that is
 * not pending is an error. */
#define Q_JOURNAL_NOSYNC 0x01
/* Q_JOURNAL_HOLD: apply the result to the envelope now but keep the line
 * in memory until q_msg_journal_flush (or the next entry without HOLD,
 * q_msg_commit or q_msg_unlock), so that the results of one SMTP
 * transaction go to -J in one write. */
#define Q_JOURNAL_HOLD   0x02
Q_API int q_msg_journal(struct q_msg *msg, size_t rcpt_index, char state,
			int code, const char *host, const char *text,
			unsigned flags, const char **error_r);
/* Write the held lines (one write); fdatasync unless Q_JOURNAL_NOSYNC. */
Q_API int q_msg_journal_flush(struct q_msg *msg, unsigned flags,
			      const char **error_r);
/* fdatasync the journal (after a batch of Q_JOURNAL_NOSYNC entries). */
Q_API int q_msg_journal_sync(struct q_msg *msg, const char **error_r);

/* Merge the journal into -H (write tmp, fsync, rename), empty -J, and
 * update the index entry (next_try is stored there; 0 = due now).
 * When no recipient is pending and none owes a bounce (X) the message
 * is removed from the spool instead: -H, then -D, then -J, then msglog/<id> and the index entry
 * (no directory fsync per message: a runner makes its removals durable
 * with one q_spool_sync); the msg then only accepts q_msg_unlock.
 * Otherwise -J is left empty (not removed) for the next attempt.
 * Returns 0 or -1. */
Q_API int q_msg_commit(struct q_msg *msg, time_t next_try, const char **error_r);

/* Freeze (reason may be NULL) or thaw; written at once (-H rewritten
 * atomically, index updated). */
Q_API int q_msg_set_frozen(struct q_msg *msg, bool frozen, const char *reason,
			   const char **error_r);

/* Remove the message's files (as q_msg_commit does), its msglog and its
 * index entry, then unlock and free *msg (also when it fails). */
Q_API int q_msg_remove(struct q_msg **msg, const char **error_r);

/* Append a line "YYYY-MM-DD HH:MM:SS text" to msglog/<id>. */
Q_API int q_msglog(struct q_spool *spool, const char *id, const char *text,
		   const char **error_r);

/* ---- the queue index (a hint in the hints db "index") ---- */
struct q_index_rec {
	char id[Q_ID_LEN + 1];
	time_t arrival;
	uint64_t size;
	uint32_t nrcpt;          /* all recipients */
	uint32_t npending;       /* still pending */
	unsigned flags;          /* Q_ENV_* */
	time_t next_try;         /* 0 = due now */
	char *sender;
	char *rcpt1;             /* first pending recipient (or first) */
	char *domains;           /* distinct domains of pending rcpts, comma-separated */
	char *rcpts;             /* every recipient, one per line: "<state> <addr>\n"
				    (state P, D or F), so that a listing need not
				    open the -H file */
};

Q_API void q_index_rec_clear(struct q_index_rec *r);  /* frees the strings */
/* Fill r from an envelope (strings are copied). */
Q_API int q_index_rec_from_env(struct q_index_rec *r, const struct q_env *env,
			       time_t next_try);
Q_API int q_index_put(struct q_hints *h, const struct q_index_rec *r,
		      const char **error_r);
Q_API int q_index_get(struct q_hints *h, const char *id, struct q_index_rec *r,
		      const char **error_r);      /* 0, Q_NOTFOUND, -1 */
Q_API int q_index_del(struct q_hints *h, const char *id, const char **error_r);

/* Walk the queue in id (arrival) order. The index is checked against the
 * spool's directories: an index entry whose -H is gone is dropped (and
 * deleted from the index), and a message on the spool that the index
 * lacks is read from its -H and added (a garbled -H is moved to corrupt/
 * and skipped). A directory unchanged since a complete listing stamped
 * it is not read again (see q_index.c). fn may lock, change or remove
 * messages (no database cursor is open while it runs). fn returns 0 to
 * go on, 1 to stop, -1 on error. The record passed to fn is valid during
 * the call only. */
typedef int q_list_fn(const struct q_index_rec *r, void *ctx);
Q_API int q_spool_list(struct q_spool *spool, q_list_fn *fn, void *ctx,
		       const char **error_r);
/* The same walk from the spool's files alone, without the hints: every
 * input/<c>/ read, every -H opened (O(N) files; a garbled -H is moved to
 * corrupt/ and skipped). next_try is 0 (retry times live in the
 * hints). For when the hints cannot be opened: a full disk where Berkeley
 * DB cannot make its regions, a damaged environment. */
Q_API int q_spool_list_files(struct q_spool *spool, q_list_fn *fn,
			     void *ctx, const char **error_r);
/* Number of messages in the index (fast; no spool check). */
Q_API int q_spool_count(struct q_spool *spool, size_t *count_r,
			const char **error_r);
/* Rebuild the index from the spool (drops the old one). Returns the
 * number of messages indexed through *count_r. */
Q_API int q_index_rebuild(struct q_spool *spool, size_t *count_r,
			  const char **error_r);

#endif
