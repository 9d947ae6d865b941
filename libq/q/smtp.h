/*
 * q/smtp.h - the SMTP client: one connection, blocking I/O with a
 * deadline per reply (poll), EHLO/HELO, PIPELINING (RFC 2920), SIZE,
 * 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS (RFC 3207) through OpenSSL
 * with session resumption, dot-stuffed data from the spool.
 *
 * Only q_smtp.c includes OpenSSL headers. A connection is used by one
 * thread at a time; a q_tls_ctx may be shared by threads.
 *
 * Failures are described by struct q_smtp_err: a retry kind (q/retry.h
 * names), the SMTP code when a reply caused it, errno when the system
 * did, and a text suitable for logs (server text is kept raw: escape it
 * before it reaches a terminal).
 */
#ifndef Q_SMTP_H
#define Q_SMTP_H

#include "q/common.h"
#include <sys/types.h>

/* ---- replies (incremental parser; usable on its own) ---- */
#define Q_REPLY_MAX_LINE 2048      /* longer lines: protocol error */
#define Q_REPLY_MAX_LINES 200      /* more lines: protocol error */
#define Q_REPLY_MAX_TEXT 8192      /* text kept; the rest is dropped */

struct q_reply {
	int code;                  /* 200..599 */
	char enh[16];              /* "5.1.1" when the lines carry one, else "" */
	size_t nlines;
	size_t textlen;
	char text[Q_REPLY_MAX_TEXT]; /* lines joined by '\n', codes stripped */
};

struct q_reply_parser;       /* opaque; holds a partial reply */
Q_API struct q_reply_parser *q_reply_parser_new(void);
Q_API void q_reply_parser_free(struct q_reply_parser **p);
Q_API void q_reply_parser_reset(struct q_reply_parser *p);
/* Feed bytes. Returns the number of bytes consumed; *done_r is set to
 * 1 when a whole reply has been parsed into *out (bytes after it are not
 * consumed), 0 when more bytes are needed, -1 on a protocol error
 * (bad code, mixed codes in one multi-line reply, a line over
 * Q_REPLY_MAX_LINE, too many lines, missing CR before LF is tolerated)
 * with the reason in *error_r. */
Q_API size_t q_reply_feed(struct q_reply_parser *p, const char *buf, size_t len,
			  struct q_reply *out, int *done_r, const char **error_r);

/* ---- TLS context ---- */
struct q_tls_ctx;
struct q_tls_opts {
	const char *ca;            /* CA file or directory to verify against;
				      "system" = OpenSSL's default paths; NULL */
	const char *cert;          /* client certificate (PEM) or NULL */
	const char *key;           /* its key or NULL (= in cert) */
};
/* Minimum version TLS 1.2. Session tickets and a client session cache
 * keyed by "host:ip:port" for resumption. */
Q_API int q_tls_ctx_new(const struct q_tls_opts *o, struct q_tls_ctx **ctx_r,
			const char **error_r);
/* Write the context's resumable sessions to path (0600, written to a
 * temporary file and renamed), so that a later run resumes them: the
 * file holds session secrets and belongs in the private spool/db.
 * Returns 0 or -1. */
Q_API int q_tls_ctx_save(struct q_tls_ctx *ctx, const char *path,
			 const char **error_r);
/* Load sessions written by q_tls_ctx_save (expired ones are skipped).
 * Returns 0 (count in *count_r), Q_NOTFOUND when there is no file, or -1
 * for an unreadable or garbled file (the sessions read before the damage
 * are kept). */
Q_API int q_tls_ctx_load(struct q_tls_ctx *ctx, const char *path,
			 size_t *count_r, const char **error_r);
/* (added) Free only after every connection made with it is closed. */
Q_API void q_tls_ctx_free(struct q_tls_ctx **ctx);

/* ---- connection ---- */
struct q_smtp_err {
	char kind[32];             /* "refused", "timeout_connect", "timeout",
				      "lost_connection", "tls_required",
				      "protocol", "mail_4xx", "data_4xx", ... */
	int code;                  /* SMTP code or 0 */
	int err;                   /* errno or 0 */
	bool permanent;            /* a 5xx that ends the attempt for every rcpt */
	char text[512];
	bool tls_failed;           /* (added) opportunistic TLS failed: kind
				      "tls_failed"; the connection is gone and
				      the caller may reconnect with avoid_tls */
};
/* (added) The kinds, all complete:
 *   connect phase: "refused" (ECONNREFUSED), "timeout_connect",
 *     "connect" (any other connect/bind error; err says which);
 *   "banner" (banner not 2xx, code set), "helo" (EHLO 4xx, or HELO
 *     refused after EHLO 5xx, code set);
 *   "timeout" (a reply or a data block did not come/go before its
 *     deadline), "lost_connection" (EOF, ECONNRESET, EPIPE, TLS error
 *     mid-dialogue), "protocol" (malformed reply, or server data that
 *     arrived before a command was sent);
 *   TLS: "tls_required" (require_tls and STARTTLS not offered, refused or
 *     failed; or verify asked and the certificate failed: the text names
 *     the X509 error), "tls_failed" (opportunistic handshake failure, with
 *     tls_failed = true), "starttls" (421 to STARTTLS);
 *   transaction: "rset" (RSET refused: code set; the connection is
 *     dropped), "mail_4xx"/"mail_5xx", "rcpt_4xx" (421 to RCPT),
 *     "data_4xx"/"data_5xx" (to DATA or to the final dot), code set,
 *     permanent = true for the 5xx ones; "mail_5xx" with code 552 also
 *     when the message is bigger than the server's SIZE (nothing sent);
 *   "local": our side (out of memory, spool fd short or unreadable, an
 *     address with control characters: permanent = true for the last).
 * A 421 reply anywhere ends the connection: nothing more is sent. */

struct q_smtp_opts {
	const char *helo_name;     /* our name for EHLO/HELO */
	/* in seconds (as q_time_parse gives them); <= 0: connect waits as
	   long as the kernel does, the others default to 300, 300, 600.
	   Each is a deadline for a whole reply (or data block, or the
	   connect, or the TLS handshake under command_timeout), not per
	   read. */
	long long connect_timeout, command_timeout, data_timeout, final_timeout;
	const char *bind_ip;       /* source address, or NULL */
	bool keepalive;
	/* TLS: tls NULL = never; else try STARTTLS when offered (unless
	   avoid_tls), and require_tls makes its absence or failure an error
	   of kind "tls_required". verify checks the chain and verify_name. */
	struct q_tls_ctx *tls;
	bool avoid_tls, require_tls, verify;
	const char *verify_name;   /* host name for SNI and the name check */
	const char *cache_key;     /* session cache key, e.g. "host:ip:port" */
	long long size_addition;   /* < 0: no SIZE= */
};

/* What the server offered (after the last EHLO). */
#define Q_EXT_PIPELINING 0x01
#define Q_EXT_SIZE       0x02
#define Q_EXT_8BITMIME   0x04
#define Q_EXT_STARTTLS   0x08
#define Q_EXT_ENHANCED   0x10
#define Q_EXT_SMTPUTF8   0x20
#define Q_EXT_CHUNKING   0x40

struct q_smtp_conn;

/* Connect to ip:port (numeric IPv4 or IPv6), read the banner, EHLO (HELO
 * when EHLO is refused with 5xx), STARTTLS as the options say, EHLO again
 * after TLS. Returns 0 with *c_r, or -1 with *e filled (no connection is
 * left open).
 * (added) A refused STARTTLS (4xx/5xx other than 421) without
 * require_tls continues in clear. A failed opportunistic handshake
 * returns -1 with kind "tls_failed" and e->tls_failed: to deliver in
 * clear, call again with avoid_tls set for this host. */
Q_API int q_smtp_open(const struct q_smtp_opts *o, const char *ip, unsigned port,
		      struct q_smtp_conn **c_r, struct q_smtp_err *e);

Q_API unsigned q_smtp_exts(const struct q_smtp_conn *c);
Q_API unsigned long long q_smtp_max_size(const struct q_smtp_conn *c); /* 0 = none */
/* "TLSv1.3:TLS_AES_256_GCM_SHA384", or NULL without TLS. */
Q_API const char *q_smtp_tls_info(const struct q_smtp_conn *c);
Q_API bool q_smtp_tls_resumed(const struct q_smtp_conn *c);
Q_API const char *q_smtp_peer_ip(const struct q_smtp_conn *c);
Q_API uint64_t q_smtp_bytes_out(const struct q_smtp_conn *c);
Q_API unsigned q_smtp_msgs(const struct q_smtp_conn *c); /* transactions accepted */

/* One transaction. MAIL FROM (with SIZE=/BODY=8BITMIME as offered),
 * RCPT TO for each of rcpts[0..n), DATA - in one write when PIPELINING
 * is offered, else one by one; with rset, "RSET" goes first (in the same
 * write when pipelining). The data comes from fd (len bytes from offset
 * 0, already CRLF and dot-stuffed, without the final dot), then ".".
 * The final reply is read under final_timeout.
 *
 * Results: rcpt_codes[i] / rcpt_texts[i] (caller's arrays of n; texts
 * are malloc'd, caller frees) get each recipient's outcome: the RCPT
 * reply when it was not 2xx, else the reply to the final dot. When the
 * whole transaction fails before that (MAIL refused, DATA refused, a
 * connection fault), every recipient not yet decided gets code 0 and
 * *e tells why; the return is then -1. Returns 0 when a reply to the
 * final dot was read (whatever its code) or when every RCPT was refused.
 * After -1 the connection is unusable (q_smtp_usable() is false) unless
 * the failure was a clean reply to MAIL or DATA. A refused MAIL stays the
 * error (mail_4xx/mail_5xx, its code, permanent for 5xx) even when the
 * server then hangs up or says 421 to the commands pipelined behind it;
 * the connection is then unusable.
 * A 421 already read behind the transaction's last reply (a server's
 * limit of messages per connection: "250 ok" and "421 bye" in one read)
 * makes the connection unusable without changing the result returned;
 * a q_smtp_send on such a connection (or on one whose EHLO reply had a
 * 421 behind it) returns -1, kind "lost_connection", code 0, the 421 in
 * the text, state "rset" (with rset) or "mail": closed between
 * messages, before any command. Other unasked bytes: kind "protocol".
 * (added) Precisely: when DATA is refused, the recipients whose RCPT was
 * accepted get the DATA reply's code and text (and *e says "data_4xx"
 * or "data_5xx"); when the final dot gets a non-2xx reply the return is
 * 0 and *e describes it too. A recipient refused at RCPT keeps its RCPT
 * reply whatever happens later. With PIPELINING and every RCPT refused
 * but DATA answered 354, an empty message (".") is sent and its reply
 * ignored (RFC 2920 3.1). The reply to the final dot is read and
 * returned before anything else is written: the next command (RSET,
 * QUIT) goes out only on the caller's next call. BODY=8BITMIME is sent
 * when q_smtp_set_body_8bit said so and the server offers 8BITMIME;
 * SMTPUTF8 is added when offered and an address has 8-bit bytes. rset is forced when the last transaction
 * left a MAIL open (every RCPT refused without PIPELINING). */
Q_API int q_smtp_send(struct q_smtp_conn *c, bool rset, const char *sender,
		      const char *const *rcpts, size_t n, int fd, off_t len,
		      int *rcpt_codes, char **rcpt_texts, struct q_smtp_err *e);

/* What the data of the following q_smtp_send calls on c is: with
 * eightbit (octets over 127, Q_ENV_8BIT), MAIL carries BODY=8BITMIME
 * when the server offers 8BITMIME (RFC 6152). A server that does not
 * offer it gets the data as it is and no BODY= (as Exim and most MTAs
 * do; nothing is converted). Default false: no BODY=. */
Q_API void q_smtp_set_body_8bit(struct q_smtp_conn *c, bool eightbit);

/* The session state for live-session display: "banner", "ehlo",
 * "starttls", "mail", "rcpt", "data", "dot", "rset", "quit", "idle".
 * (added) A static string; may be read from another thread while the
 * owner is inside q_smtp_send (as may q_smtp_bytes_out). After a
 * q_smtp_send that broke the connection it stays where the dialogue
 * broke: "dot" is set before the block that carries the final dot is
 * written, so any state but "dot" means the server cannot have accepted
 * the message. */
Q_API const char *q_smtp_state(const struct q_smtp_conn *c);
/* Can another transaction go down this connection? */
Q_API bool q_smtp_usable(const struct q_smtp_conn *c);

/* QUIT (politely, short timeout), close and free. */
Q_API void q_smtp_close(struct q_smtp_conn **c);

#endif
