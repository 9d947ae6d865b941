/*
 * q/hints.h - the hints databases: one Berkeley DB transactional
 * environment under <spool>/db, shared safely by concurrent processes.
 *
 * Only q_hints.c includes db.h. Every database is a btree keyed by bytes.
 * The environment is opened with DB_REGISTER | DB_RECOVER, so a process
 * killed mid-write is recovered by the next opener; commits do not fsync
 * (DB_TXN_WRITE_NOSYNC): hints can be rebuilt. An environment that cannot
 * be opened even with recovery (corrupt files) is reported, moved aside to
 * db.corrupt-<time>, and created anew (q_hints_open says so through
 * *notice_r).
 *
 * Every record value starts with a version byte (q_rec_*). A reader that
 * meets a version it does not know reports it and skips the record.
 */
#ifndef Q_HINTS_H
#define Q_HINTS_H

#include "q/common.h"
#include "q/util.h"

struct q_hints;

enum q_db {
	Q_DB_INDEX,        /* "index":          id -> struct q_index_rec */
	Q_DB_RETRY,        /* "retry":          retry key -> struct q_retry_rec */
	Q_DB_WAIT,         /* "wait-<t>":       host -> id (sorted duplicates) */
	Q_DB_SERIALIZE,    /* "serialize-<t>":  host#slot -> struct q_slot */
	Q_DB_SESSIONS,     /* "sessions":       pid.worker -> struct q_session_rec */
	Q_DB__COUNT
};

/* Open (creating if needed) the environment in dir for a transport name
 * (used in the wait-/serialize- database names). *notice_r, when not
 * NULL, receives a text if the environment had to be rebuilt (else NULL;
 * the text lives until the thread's next q_hints_open). Returns 0 or -1.
 * A handle may be shared by the threads of a process; opening the same
 * dir again in a process shares one environment. A handle must not be
 * used in a forked child (the child opens its own; q_hints_close there
 * only frees memory). */
Q_API int q_hints_open(const char *dir, const char *transport,
		       struct q_hints **h_r, const char **notice_r,
		       const char **error_r);
Q_API void q_hints_close(struct q_hints **h);

/* Damaged hints moved aside (the text names the directory and where it
 * went): at open, q_hints_open says so through *notice_r (its caller
 * logs it); found by a later operation, the main log gets a line (q_log)
 * and the operation fails with the same text. Either way the text is
 * also passed to fn (process-wide; NULL, the default: written to stderr
 * when stderr is a terminal, "<program>: warning: hints: <text>"); fn
 * is called with no lock of the hints held.
 * A full disk is an error (ENOSPC's text, "try again"), never a move. */
typedef void q_hints_notice_fn(const char *text);
Q_API void q_hints_set_notice_fn(q_hints_notice_fn *fn);

/* Name of a database as stored ("index", "retry", "wait-smtp", ...). */
Q_API const char *q_hints_db_name(const struct q_hints *h, enum q_db db);
/* Look a name up ("retry", "wait", "wait-smtp", ...): 0 and *db_r, or -1. */
Q_API int q_hints_db_lookup(const struct q_hints *h, const char *name,
			    enum q_db *db_r, const char **error_r);

/* Plain operations, each its own transaction (deadlocks are retried).
 * get: 0 with the value in *val (reset first), Q_NOTFOUND, or -1. */
Q_API int q_hints_get(struct q_hints *h, enum q_db db, const void *key,
		      size_t klen, struct q_buf *val, const char **error_r);
Q_API int q_hints_put(struct q_hints *h, enum q_db db, const void *key,
		      size_t klen, const void *val, size_t vlen,
		      const char **error_r);
/* del: 0, Q_NOTFOUND, or -1. For Q_DB_WAIT it deletes all ids of the key. */
Q_API int q_hints_del(struct q_hints *h, enum q_db db, const void *key,
		      size_t klen, const char **error_r);

/* Several puts and deletes on one database in one transaction (one log
 * write instead of one per record; a deadlock retries the whole batch).
 * A put of a key that is there replaces it (for Q_DB_WAIT: adds the pair
 * unless present); a delete of a key or, for Q_DB_WAIT with val set, of
 * the (key, val) pair that is not there is not an error. Batches are cut
 * into transactions of Q_HINTS_BATCH_MAX items. 0 or -1. */
enum q_hints_bop { Q_HINTS_BPUT, Q_HINTS_BDEL };
struct q_hints_item {
	enum q_hints_bop op;
	const void *key, *val;
	size_t klen, vlen;
};
#define Q_HINTS_BATCH_MAX 256
Q_API int q_hints_batch(struct q_hints *h, enum q_db db,
			const struct q_hints_item *items, size_t n,
			const char **error_r);

/* Read-modify-write in one transaction. fn gets the current value (NULL,
 * 0 when absent) and returns Q_HINTS_KEEP, Q_HINTS_PUT (with the new
 * value in *out) or Q_HINTS_DELETE, or -1 to abort (q_hints_update then
 * fails with the text fn left through q_err).
 * fn runs while the record is locked: it must not call q_hints functions,
 * and it may be called more than once (a deadlock retries the whole
 * transaction), so it must depend only on old and ctx. */
#define Q_HINTS_KEEP   0
#define Q_HINTS_PUT    1
#define Q_HINTS_DELETE 2
typedef int q_hints_update_fn(const void *old, size_t oldlen,
			      struct q_buf *out, void *ctx);
Q_API int q_hints_update(struct q_hints *h, enum q_db db, const void *key,
			 size_t klen, q_hints_update_fn *fn, void *ctx,
			 const char **error_r);

/* Walk a database in key order (read-only, no long-held locks: bulk
 * reads). fn returns 0 to go on, 1 to stop, -1 on error. For Q_DB_WAIT,
 * each (host, id) pair is one call. With prefix != NULL only keys that
 * start with it are visited. No lock is held while fn runs: fn may
 * write to the hints (even delete the record it was given); records
 * changed ahead of the walk are seen or not. */
typedef int q_hints_iter_fn(const void *key, size_t klen, const void *val,
			    size_t vlen, void *ctx);
Q_API int q_hints_iter(struct q_hints *h, enum q_db db, const void *prefix,
		       size_t plen, q_hints_iter_fn *fn, void *ctx,
		       const char **error_r);
/* Number of records (keys; for Q_DB_WAIT pairs). */
Q_API int q_hints_count(struct q_hints *h, enum q_db db, size_t *count_r,
			const char **error_r);
/* Delete every record of a database. */
Q_API int q_hints_truncate(struct q_hints *h, enum q_db db, const char **error_r);

/* Q_DB_WAIT: add or delete one (host, id) pair. del returns Q_NOTFOUND
 * when the pair was not there. */
Q_API int q_wait_add(struct q_hints *h, const char *host, const char *id,
		     const char **error_r);
Q_API int q_wait_del(struct q_hints *h, const char *host, const char *id,
		     const char **error_r);
/* Ids waiting for host, in id order, at most max (0 = all): appended to
 * *ids_r (malloc'd strings; free with q_strv_free from q/addr.h). */
Q_API int q_wait_list(struct q_hints *h, const char *host, size_t max,
		      char ***ids_r, size_t *n_r, const char **error_r);

/* ---- record encoding: version byte, then fields ----
 * Writers append fixed-width little-endian integers and length-prefixed
 * strings; readers check every length and fail (-1) on a short or
 * oversized record instead of reading past its end. */
struct q_rec_reader {
	const unsigned char *p;
	size_t left;
	bool bad;                /* set by any read that ran out */
};
Q_API int q_rec_put_u8(struct q_buf *b, uint8_t v);
Q_API int q_rec_put_u32(struct q_buf *b, uint32_t v);
Q_API int q_rec_put_u64(struct q_buf *b, uint64_t v);
Q_API int q_rec_put_str(struct q_buf *b, const char *s);   /* NULL = "" */
Q_API void q_rec_reader_init(struct q_rec_reader *r, const void *p, size_t n);
Q_API uint8_t q_rec_get_u8(struct q_rec_reader *r);
Q_API uint32_t q_rec_get_u32(struct q_rec_reader *r);
Q_API uint64_t q_rec_get_u64(struct q_rec_reader *r);
/* Returns a malloc'd copy, or NULL (and r->bad) when short or ENOMEM. */
Q_API char *q_rec_get_str(struct q_rec_reader *r);

/* ---- serialization slots (q_serialize.c) ----
 * At most `limit` connections at a time to a host. A slot record holds
 * the owner's pid, the time taken and the boot id. A slot is stale (and
 * may be taken over) when older than 6 hours, when its pid is dead, or
 * when its boot id differs from the current one. */
struct q_slot {
	uint32_t slot;
	long pid;
	time_t taken;
	char boot_id[40];
};
#define Q_SLOT_STALE_SECS (6 * 3600)

/* Take a free or stale slot for host. Returns 0 and *slot_r, Q_BUSY when
 * all `limit` slots are held, or -1. now and boot_id are passed in so
 * tests can fake them (boot_id NULL = the real one). */
Q_API int q_serialize_take(struct q_hints *h, const char *host, unsigned limit,
			   time_t now, const char *boot_id, unsigned *slot_r,
			   const char **error_r);
/* Release a slot taken by this pid. Q_NOTFOUND when it was not ours. */
Q_API int q_serialize_release(struct q_hints *h, const char *host, unsigned slot,
			      const char **error_r);
/* Is this slot record stale at now, for the current boot_id? */
Q_API bool q_slot_stale(const struct q_slot *s, time_t now, const char *boot_id);
/* Decode a serialize record (for dump and reboot clean-up). */
Q_API int q_slot_decode(const void *val, size_t len, struct q_slot *s,
			const char **error_r);
/* Remove slot records whose boot id is not boot_id (NULL = the real one)
 * and, when also_stale, every other stale one. *removed_r counts them. */
Q_API int q_serialize_clean(struct q_hints *h, const char *boot_id,
			    bool also_stale, time_t now, size_t *removed_r,
			    const char **error_r);

/* ---- live sessions (q_session.c) ---- */
struct q_session_rec {
	long pid;
	uint32_t worker;
	char boot_id[40];
	char *host;
	char *ip;
	uint32_t port;
	char *tls;               /* "TLSv1.3:TLS_AES_256_GCM_SHA384" or NULL */
	char *state;             /* "connect", "ehlo", "mail", "rcpt", "data", ... */
	char *msgid;             /* current message, or NULL */
	uint32_t msgs;           /* messages sent on this connection */
	uint64_t bytes;          /* bytes sent on this connection */
	time_t started;
	time_t changed;
};
Q_API void q_session_rec_clear(struct q_session_rec *s);
/* Write (create or replace) the record keyed by pid.worker. */
Q_API int q_session_put(struct q_hints *h, const struct q_session_rec *s,
			const char **error_r);
Q_API int q_session_del(struct q_hints *h, long pid, uint32_t worker,
			const char **error_r);
/* Call fn for each session whose process is alive and of this boot (the
 * others are deleted as they are met). */
typedef int q_session_fn(const struct q_session_rec *s, void *ctx);
Q_API int q_session_list(struct q_hints *h, q_session_fn *fn, void *ctx,
			 const char **error_r);
Q_API int q_session_decode(const void *val, size_t len, struct q_session_rec *s,
			   const char **error_r);
/* Remove records from another boot (boot_id NULL = the real one). */
Q_API int q_session_clean(struct q_hints *h, const char *boot_id,
			  size_t *removed_r, const char **error_r);

/* Index record codec (used by q_spool.c, qhints dump). */
struct q_index_rec;
Q_API int q_index_rec_encode(const struct q_index_rec *r, struct q_buf *out);
Q_API int q_index_rec_decode(const void *val, size_t len, struct q_index_rec *r,
			     const char **error_r);

#endif
