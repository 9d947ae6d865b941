/*
 * q/runner.h - a queue run: the delivery engine behind qrun and
 * `qctl flush`.
 *
 * Phase 1 lists the due messages from the queue index, routes every
 * pending recipient's domain once per run, groups recipients by host
 * list (recipients of several domains that share a host list travel
 * together), splits groups by max_rcpt, and records (host, id) pairs in
 * the wait hints. Phase 2 runs up to `parallel` worker threads; a worker
 * takes a destination, connects (skipping IPs whose retry time has not
 * come, taking a serialization slot where serialize_hosts says), and
 * sends every message waiting for that destination down the same
 * connection - TLS session included - up to batch_max, before QUIT.
 * Recipients that every primary host deferred go to fallback_hosts in a
 * last pass, one copy per message.
 *
 * Each recipient's result is journaled (q_msg_journal) as soon as its
 * reply is read, before anything else is sent.
 */
#ifndef Q_RUNNER_H
#define Q_RUNNER_H

#include "q/common.h"
#include <stdio.h>

struct q_spool;
struct q_conf;

struct q_run_opts {
	bool force;                 /* -f: ignore retry times */
	bool thaw;                  /* -ff: also thaw frozen messages */
	const char *const *ids;     /* -M: only these messages (forced) */
	size_t nids;
	const char *domain;         /* -R: only messages with a recipient here */
	unsigned parallel;          /* -P: workers; 0 = remote_max_parallel */
	bool no_run_lock;           /* do not take a queue_run_max slot */
	FILE *verbose;              /* -v: progress lines here, or NULL */
	volatile int *stop;         /* when *stop becomes non-zero: no new
				       connections; finish those in flight */
};

struct q_run_stats {
	size_t messages;            /* messages attempted */
	size_t completed;           /* messages with nothing left pending */
	size_t delivered;           /* recipients */
	size_t deferred;
	size_t failed;
	size_t bounces;             /* bounce messages queued */
	size_t connections;
	size_t tls;                 /* TLS handshakes (full + resumed) */
	size_t tls_resumed;
	size_t skipped_busy;        /* messages locked by another process */
	double seconds;
};

/* One queue run. Returns 0 when the run completed (deferrals are normal),
 * Q_BUSY when queue_run_max runs are already going (nothing was done),
 * -1 when the run could not work (spool, hints), with a text. */
Q_API int q_run(struct q_spool *spool, const struct q_conf *conf,
		const struct q_run_opts *o, struct q_run_stats *st,
		const char **error_r);

/* Queue a bounce (a DSN, RFC 3464) to env's sender for the recipients
 * whose indices are in failed[0..n). Nothing is queued (and 0 returned
 * with *id_r set to "") when the sender is empty. */
struct q_env;
Q_API int q_dsn_queue(struct q_spool *spool, const struct q_env *env,
		      const size_t *failed, size_t n, const char *our_name,
		      char *id_r, const char **error_r);

#endif
