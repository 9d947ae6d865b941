/*
 * q/retry.h - retry keys, retry records and Exim-style retry rules.
 *
 * Keys (ARCHITECTURE.md):
 *   T:<host>:<ip>[:<port>]  host retry, one per IP (retry_include_ip_address)
 *   T:<host>                host retry without the IP
 *   R:<domain>              routing retry
 *   <address>:<msgid>       an address that every host deferred with 4xx
 * The port is written only when it is not 25.
 *
 * A rule is "PATTERN ERROR ALGORITHMS", e.g. "* * F,2h,15m; G,16h,1h,1.5;
 * F,4d,6h". Each algorithm runs until its cutoff, measured from the first
 * failure; F,cutoff,interval retries at a fixed interval; G,cutoff,start,
 * factor starts at `start` and multiplies the previous interval by
 * `factor`; H,cutoff,start,factor computes G's interval g and uses one
 * between max(g/2, start) and g, chosen by a hash of the retry key and
 * the record's times. The computation is a pure function of (record,
 * rule, key, now).
 */
#ifndef Q_RETRY_H
#define Q_RETRY_H

#include "q/common.h"
#include "q/util.h"

struct q_hints;

/* ---- keys ---- */
Q_API int q_retry_key_host(struct q_buf *out, const char *host, const char *ip,
			   unsigned port, bool include_ip);
Q_API int q_retry_key_route(struct q_buf *out, const char *domain);
Q_API int q_retry_key_addr(struct q_buf *out, const char *addr, const char *msgid);

/* ---- error kinds ----
 * Names as in Exim: "refused", "timeout_connect", "timeout",
 * "lost_connection", "tls_required", "lookup", "auth_failed", "quota",
 * "mail_4xx", "rcpt_4xx", "data_4xx" (and the precise forms "rcpt_451",
 * "rcpt_45x" in rules), "*" in rules matches all. A failure is described
 * by a kind name and, for the *_4xx kinds, the SMTP code. */
Q_API bool q_retry_kind_valid(const char *rule_kind);   /* rule side */
/* Does a rule's error field match a failure (kind, code)? E.g. "rcpt_4xx"
 * matches ("rcpt_4xx", 452); "rcpt_45x" matches 451 and 452, not 421. */
Q_API bool q_retry_kind_match(const char *rule_kind, const char *kind, int code);

/* ---- rules ---- */
struct q_retry_algo {
	char type;               /* 'F', 'G' or 'H' */
	long long cutoff;        /* seconds from the first failure */
	long long p1;            /* F: interval; G, H: first interval */
	double factor;           /* G and H only (> 1.0) */
};
struct q_retry_rule {
	char *pattern;           /* "*", "domain", "*.domain", "*@domain", glob */
	char *kind;              /* error field, "*" = all */
	size_t nalgo;
	struct q_retry_algo *algo;
};

/* Parse the algorithm list "F,2h,15m; G,16h,1h,1.5; F,4d,6h" (H as G) into rule
 * (pattern and kind are not touched). -1 with a text naming the bad item.
 * Cutoffs must increase. */
Q_API int q_retry_parse_algos(const char *s, struct q_retry_rule *rule,
			      const char **error_r);
Q_API void q_retry_rule_clear(struct q_retry_rule *rule);
/* The built-in default rule: * * F,2h,15m; G,16h,1h,1.5; F,4d,6h. */
Q_API const struct q_retry_rule *q_retry_default_rule(void);
/* First rule in rules[0..n) whose pattern matches host (or, failing that,
 * domain; either may be NULL) and whose kind matches (kind, code); the
 * default rule when none does. */
Q_API const struct q_retry_rule *q_retry_find_rule(const struct q_retry_rule *rules,
						  size_t n, const char *host,
						  const char *domain, const char *kind,
						  int code);

/* ---- records ---- */
struct q_retry_rec {
	time_t first_failed;
	time_t last_try;
	time_t next_try;
	bool expired;            /* past the rule's final cutoff */
	int err;                 /* errno of the failure, or 0 */
	int code;                /* SMTP code, or 0 */
	char kind[32];           /* error kind name */
	char *text;              /* error text (malloc'd), may be NULL */
};
Q_API void q_retry_rec_clear(struct q_retry_rec *r);
Q_API int q_retry_rec_encode(const struct q_retry_rec *r, struct q_buf *out);
Q_API int q_retry_rec_decode(const void *val, size_t len, struct q_retry_rec *r,
			     const char **error_r);

/* The pure part: record a failure at `now` into rec (first_failed is set
 * when 0; last_try = now), and compute next_try and expired from rule and
 * interval_max (the cap on one interval; <= 0 means 24h; more than
 * Q_RETRY_INTERVAL_LIMIT means Q_RETRY_INTERVAL_LIMIT). Time arithmetic
 * saturates: now <= next_try <= the largest time_t, whatever the rule,
 * interval_max, record or clock. An H algorithm's choice here depends on
 * the record's times only; q_retry_compute_key adds the retry key. */
Q_API void q_retry_compute(struct q_retry_rec *rec, const struct q_retry_rule *rule,
			   long long interval_max, time_t now);
/* The same with the retry key (may be NULL: as q_retry_compute), from
 * which, with first_failed and now, an H algorithm derives its choice
 * within [max(g/2, start), g]: deterministic for one key, record and
 * clock, different from key to key. q_retry_fail calls this. */
Q_API void q_retry_compute_key(struct q_retry_rec *rec,
			       const struct q_retry_rule *rule,
			       long long interval_max, const char *key,
			       time_t now);

/* Is the key due at now? (no record, or next_try <= now) */
Q_API bool q_retry_due(const struct q_retry_rec *rec, time_t now);

/* ---- added by q_retry.c (Exim behaviour the runner needs) ----
 * A struct q_retry_rec must be zero-initialised before first use (like
 * struct q_buf): functions that fill one free its previous text.
 * A record not updated for Q_RETRY_DATA_EXPIRE (Exim's retry_data_expire)
 * is ignored by q_retry_compute: the next failure starts a new record.
 * Error texts are stored up to Q_RETRY_TEXT_MAX bytes.
 * q_retry_parse_algos accepts an empty list (a rule without algorithms:
 * the first failure is already past the cutoff, as in Exim) and sets
 * rule->algo/nalgo without freeing an earlier array. */
#define Q_RETRY_DATA_EXPIRE (7 * 86400)
#define Q_RETRY_TEXT_MAX 512
/* The longest interval between two tries, the most retry_interval_max
 * may be (3d12h). A longer one would let the record outlive
 * Q_RETRY_DATA_EXPIRE before its next try: it would be forgotten, its
 * first failure with it, and the destination would never expire. Half
 * leaves as long again for a late queue run. */
#define Q_RETRY_INTERVAL_LIMIT ((long long)Q_RETRY_DATA_EXPIRE / 2)

/* The last cutoff of a rule (0 when it has no algorithms: no retries). */
Q_API long long q_retry_final_cutoff(const struct q_retry_rule *rule);

/* May a host (IP) with this record be tried now, for a message that
 * arrived at `arrival` (0 = unknown)? As Exim: no record or next_try
 * reached: USE; not due but the message is older than the rule's final
 * cutoff and the record not expired: USE (one attempt so that the
 * address can time out); else SKIP, or SKIP_EXPIRED when the record is
 * past its final cutoff. Skipped hosts do not count towards
 * hosts_max_try. */
enum q_retry_use { Q_RETRY_USE, Q_RETRY_SKIP, Q_RETRY_SKIP_EXPIRED };
Q_API enum q_retry_use q_retry_host_use(const struct q_retry_rec *rec,
					const struct q_retry_rule *rule,
					time_t arrival, time_t now);

/* delay_after_cutoff = false (Exim): when every IP of an address is
 * SKIP_EXPIRED, an IP is tried anyway if it has not been tried since the
 * message arrived (this returns true for it); if none qualifies, or all
 * fail, the address bounces ("retry timeout exceeded"). With the default
 * delay_after_cutoff = true such an address bounces without an attempt. */
Q_API bool q_retry_try_after_cutoff(const struct q_retry_rec *rec,
				    time_t arrival);

/* ---- the retry database ---- */
/* 0, Q_NOTFOUND, -1. A record of unknown version is -1 with a text. */
Q_API int q_retry_get(struct q_hints *h, const char *key, struct q_retry_rec *rec,
		      const char **error_r);
/* Record a failure for key (read-modify-write in one transaction): the
 * record is created or updated by q_retry_compute_key with this key. The result is copied
 * to *rec_r when not NULL. */
Q_API int q_retry_fail(struct q_hints *h, const char *key,
		       const struct q_retry_rule *rule, long long interval_max,
		       const char *kind, int code, int err, const char *text,
		       time_t now, struct q_retry_rec *rec_r, const char **error_r);
/* A success: delete the record. 0 or Q_NOTFOUND, -1. */
Q_API int q_retry_clear(struct q_hints *h, const char *key, const char **error_r);

#endif
