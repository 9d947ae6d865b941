/*
 * q_smtp.c - the SMTP client: one connection to one server, and the TLS
 * context it shares with other connections. The only libq module that
 * includes OpenSSL (the reply parser lives in q_smtp_reply.c).
 *
 * I/O model: a non-blocking socket driven by poll(). Every wait has a
 * DEADLINE computed when the wait for a reply (or a data block, or the
 * connect) starts, so a server that trickles a byte a second still times
 * out at command_timeout. Nothing blocks without a deadline except a
 * connect with connect_timeout <= 0 (then the kernel's SYN timeout rules).
 *
 * Under TLS the SSL object talks to a BIO pair in memory; this module
 * moves bytes between the pair and the socket itself (send with
 * MSG_NOSIGNAL, zero-copy through BIO_nread0/BIO_nwrite0). So a TLS
 * write never raises SIGPIPE, never blocks, and a pipelined group is one
 * SSL_write: one TLS record, one send().
 *
 * Commands are collected in an output buffer and sent in one write: the
 * whole group [RSET] MAIL RCPT... DATA with PIPELINING (RFC 2920), one
 * command at a time without it. Replies are matched against the commands
 * in order (the "FIFO" is the index of the next command to be answered).
 * Very long groups (more than PIPE_MAX_BYTES) are cut into several
 * writes, each one answered before the next goes out, so that neither
 * side can deadlock on full socket buffers.
 *
 * Message data is read from the spool fd in BLOCK_SIZE blocks with
 * pread, the final dot appended to the last block; each block is written
 * under data_timeout. Plain connections send messages over BLOCK_SIZE
 * with sendfile(2) (SIGPIPE blocked in this thread for the duration),
 * then the final dot.
 *
 * Invariants:
 *  - c->broken: the dialogue is out of step or the server is gone (I/O
 *    error, timeout, 421, malformed reply, abandoned data). Nothing more
 *    is written to the server, not even QUIT; q_smtp_usable() is false.
 *  - c->server_left: broken by a 421 found in the input buffer between
 *    transactions (c->reply holds it); the next q_smtp_send reports a
 *    connection closed between messages.
 *  - c->dirty: a MAIL was accepted and its transaction not finished;
 *    the next q_smtp_send sends RSET first even when not asked.
 *  - the reply to the final dot is read and returned to the caller
 *    before anything else is written on the connection.
 *  - every buffer is bounded: input RBUF_SIZE, one reply (the parser's
 *    fixed struct), data BLOCK_SIZE, BIO pair NET_OUT/NET_IN.
 *
 * Session cache: struct q_tls_ctx keeps at most SESS_MAX sessions in a
 * hash table keyed by "cache_key|verify_name" (verify_name is part of the
 * key because a resumed session skips certificate checks), oldest evicted
 * first, under a mutex. New sessions (TLS 1.2 during the handshake,
 * TLS 1.3 tickets after it) arrive through the new-session callback;
 * the newest replaces the older one for the same key. Sessions are
 * reused by several connections (TLS 1.3 ticket reuse is accepted by
 * common servers; a rejected one costs a full handshake, nothing else).
 *
 * Diagnostics: struct q_smtp_err (kinds in q/smtp.h). Server text is
 * copied raw; callers escape it for terminals. After a failure that
 * broke the connection, q_smtp_state() stays at the phase that failed;
 * "dot" is entered before the block carrying the final dot is written.
 *
 * Not done / weak: 8-bit data goes to a server that does not offer
 * 8BITMIME as it is (no conversion to quoted-printable, like Exim);
 * CHUNKING is parsed but BDAT is not used; no AUTH; DANE and
 * MTA-STS are the caller's business. Extensions are matched against a
 * fixed keyword list (O(lines x 7) per EHLO). TLS 1.3 tickets are reused
 * by parallel connections to the same key rather than used once.
 *
 * Cost per message (plain, pipelined): one send for the command group,
 * one or two poll+recv for its replies, one pread and one send for a
 * message up to 64 KB, one poll+recv for the final reply. The only
 * allocations are the per-recipient reply texts the API returns.
 */
#include "config.h"
#include "q_private.h"
#include "q/smtp.h"
#include "q/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define RBUF_SIZE       16384          /* socket (or TLS) read buffer */
#define BLOCK_SIZE      65536          /* data block */
#define NET_OUT         (BLOCK_SIZE + 16384) /* BIO pair, TLS -> socket */
#define NET_IN          (2 * 17408)    /* BIO pair, socket -> TLS */
#define PIPE_MAX_BYTES  49152          /* one pipelined write at most */
#define QUIT_TIMEOUT_MS 10000          /* cap on waiting for QUIT's reply */
#define SESS_BUCKETS    256
#define SESS_MAX        4096
#define ADDR_MAX        1024           /* longest address we send */

/* ------------------------------------------------------------------ */
/* TLS context and session cache */

struct sess_ent {
	struct sess_ent *hnext;          /* hash chain */
	struct sess_ent *older, *newer;  /* age list */
	SSL_SESSION *sess;
	unsigned hash;
	char key[];
};

struct q_tls_ctx {
	SSL_CTX *ssl_ctx;
	pthread_mutex_t mu;
	struct sess_ent *bucket[SESS_BUCKETS];
	struct sess_ent *oldest, *newest;
	size_t nsess;
};

static unsigned key_hash(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* Unlink e from both lists and free it. Lock held. */
static void sess_drop(struct q_tls_ctx *t, struct sess_ent *e)
{
	struct sess_ent **pp = &t->bucket[e->hash % SESS_BUCKETS];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		t->newest = e->older;
	SSL_SESSION_free(e->sess);
	free(e);
	t->nsess--;
}

static struct sess_ent *sess_find(struct q_tls_ctx *t, const char *key,
				  unsigned h)
{
	struct sess_ent *e;

	for (e = t->bucket[h % SESS_BUCKETS]; e != NULL; e = e->hnext)
		if (e->hash == h && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* Store sess under key; takes over the caller's reference on success. */
static bool sess_put(struct q_tls_ctx *t, const char *key, SSL_SESSION *sess)
{
	unsigned h = key_hash(key);
	size_t klen = strlen(key);
	struct sess_ent *e = malloc(sizeof(*e) + klen + 1), *old;

	if (e == NULL)
		return false;
	memcpy(e->key, key, klen + 1);
	e->hash = h;
	e->sess = sess;
	pthread_mutex_lock(&t->mu);
	old = sess_find(t, key, h);
	if (old != NULL)
		sess_drop(t, old);
	while (t->nsess >= SESS_MAX && t->oldest != NULL)
		sess_drop(t, t->oldest);
	e->hnext = t->bucket[h % SESS_BUCKETS];
	t->bucket[h % SESS_BUCKETS] = e;
	e->older = t->newest;
	e->newer = NULL;
	if (t->newest != NULL)
		t->newest->newer = e;
	else
		t->oldest = e;
	t->newest = e;
	t->nsess++;
	pthread_mutex_unlock(&t->mu);
	return true;
}

/* A new reference to the session stored under key, or NULL. Expired
 * sessions are dropped. */
static SSL_SESSION *sess_get(struct q_tls_ctx *t, const char *key)
{
	unsigned h = key_hash(key);
	struct sess_ent *e;
	SSL_SESSION *s = NULL;

	pthread_mutex_lock(&t->mu);
	e = sess_find(t, key, h);
	if (e != NULL) {
		long born = SSL_SESSION_get_time(e->sess);
		long life = SSL_SESSION_get_timeout(e->sess);

		if (!SSL_SESSION_is_resumable(e->sess) ||
		    (long)time(NULL) > born + life) {
			sess_drop(t, e);
		} else {
			s = e->sess;
			SSL_SESSION_up_ref(s);
		}
	}
	pthread_mutex_unlock(&t->mu);
	return s;
}

static void sess_forget(struct q_tls_ctx *t, const char *key)
{
	struct sess_ent *e;

	pthread_mutex_lock(&t->mu);
	e = sess_find(t, key, key_hash(key));
	if (e != NULL)
		sess_drop(t, e);
	pthread_mutex_unlock(&t->mu);
}

/* ---- the session cache on disk (resumption across runs) ----
 * File: "qkit-tls-sessions 1\n", then per session a u32 key length, the
 * key, a u32 DER length and the DER of the SSL_SESSION (big-endian
 * lengths). Sessions hold secrets: the file is written 0600 (tmp, then
 * rename) and the caller keeps it in the private spool/db directory. */
#define SESS_FILE_MAGIC "qkit-tls-sessions 1\n"
#define SESS_FILE_MAX_DER 65536

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int q_tls_ctx_save(struct q_tls_ctx *t, const char *path, const char **error_r)
{
	char tmp[4096];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return q_err(error_r, "%s: path too long", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return q_err(error_r, "create %s: %s", tmp, strerror(errno));
	FILE *f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		unlink(tmp);
		return q_err(error_r, "%s: %s", tmp, strerror(errno));
	}
	fputs(SESS_FILE_MAGIC, f);
	time_t now = time(NULL);
	pthread_mutex_lock(&t->mu);
	for (struct sess_ent *e = t->oldest; e != NULL; e = e->newer) {
		long born = SSL_SESSION_get_time(e->sess);
		long life = SSL_SESSION_get_timeout(e->sess);
		if (!SSL_SESSION_is_resumable(e->sess) || (long)now > born + life)
			continue;
		int dlen = i2d_SSL_SESSION(e->sess, NULL);
		if (dlen <= 0 || dlen > SESS_FILE_MAX_DER)
			continue;
		unsigned char *der = malloc((size_t)dlen), *p = der;
		if (der == NULL || i2d_SSL_SESSION(e->sess, &p) != dlen) {
			free(der);
			continue;
		}
		unsigned char len[4];
		size_t klen = strlen(e->key);
		put_u32(len, (uint32_t)klen);
		fwrite(len, 1, 4, f);
		fwrite(e->key, 1, klen, f);
		put_u32(len, (uint32_t)dlen);
		fwrite(len, 1, 4, f);
		fwrite(der, 1, (size_t)dlen, f);
		OPENSSL_cleanse(der, (size_t)dlen);
		free(der);
	}
	pthread_mutex_unlock(&t->mu);
	if (fflush(f) != 0 || ferror(f)) {
		fclose(f);
		unlink(tmp);
		return q_err(error_r, "write %s: %s", tmp, strerror(errno));
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return q_err(error_r, "rename %s: %s", tmp, strerror(errno));
	}
	return 0;
}

int q_tls_ctx_load(struct q_tls_ctx *t, const char *path, size_t *count_r,
		   const char **error_r)
{
	size_t count = 0;
	if (count_r != NULL)
		*count_r = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return Q_NOTFOUND;
		return q_err(error_r, "open %s: %s", path, strerror(errno));
	}
	FILE *f = fdopen(fd, "r");
	if (f == NULL) {
		close(fd);
		return q_err(error_r, "%s: %s", path, strerror(errno));
	}
	char magic[sizeof(SESS_FILE_MAGIC)];
	if (fread(magic, 1, sizeof(magic) - 1, f) != sizeof(magic) - 1 ||
	    memcmp(magic, SESS_FILE_MAGIC, sizeof(magic) - 1) != 0) {
		fclose(f);
		return q_err(error_r, "%s: not a qkit TLS session file", path);
	}
	unsigned char len[4];
	char key[1024];
	unsigned char *der = malloc(SESS_FILE_MAX_DER);
	int ret = 0;
	while (der != NULL && fread(len, 1, 4, f) == 4) {
		uint32_t klen = get_u32(len);
		if (klen == 0 || klen >= sizeof(key) || fread(key, 1, klen, f) != klen ||
		    fread(len, 1, 4, f) != 4) {
			ret = q_err(error_r, "%s: truncated or garbled", path);
			break;
		}
		key[klen] = '\0';
		uint32_t dlen = get_u32(len);
		if (dlen == 0 || dlen > SESS_FILE_MAX_DER || fread(der, 1, dlen, f) != dlen) {
			ret = q_err(error_r, "%s: truncated or garbled", path);
			break;
		}
		const unsigned char *p = der;
		SSL_SESSION *sess = d2i_SSL_SESSION(NULL, &p, (long)dlen);
		if (sess == NULL)
			continue;           /* one bad entry: skip it */
		long born = SSL_SESSION_get_time(sess);
		long life = SSL_SESSION_get_timeout(sess);
		if (!SSL_SESSION_is_resumable(sess) || (long)time(NULL) > born + life ||
		    !sess_put(t, key, sess)) {
			SSL_SESSION_free(sess);
			continue;
		}
		count++;
	}
	if (der != NULL) {
		OPENSSL_cleanse(der, SESS_FILE_MAX_DER);
		free(der);
	}
	fclose(f);
	if (count_r != NULL)
		*count_r = count;
	return ret;
}

struct q_smtp_conn;
static const char *conn_sess_key(const struct q_smtp_conn *c);

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct q_tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	const struct q_smtp_conn *c = SSL_get_app_data(ssl);
	const char *key = c != NULL ? conn_sess_key(c) : NULL;

	if (t == NULL || key == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	return sess_put(t, key, sess) ? 1 : 0;
}

/* The most specific OpenSSL error queued for this thread, then clear. */
static const char *ssl_errstr(char *buf, size_t size)
{
	unsigned long code, last = 0;

	while ((code = ERR_get_error()) != 0)
		last = code;
	if (last == 0)
		snprintf(buf, size, "unknown TLS error");
	else
		ERR_error_string_n(last, buf, size);
	return buf;
}

int q_tls_ctx_new(const struct q_tls_opts *o, struct q_tls_ctx **ctx_r,
		  const char **error_r)
{
	struct q_tls_ctx *t;
	char eb[256];

	*ctx_r = NULL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return q_err(error_r, "TLS context: out of memory");
	if (pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t);
		return q_err(error_r, "TLS context: mutex init failed");
	}
	ERR_clear_error();
	t->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (t->ssl_ctx == NULL) {
		q_err(error_r, "SSL_CTX_new: %s", ssl_errstr(eb, sizeof(eb)));
		goto fail;
	}
	SSL_CTX_set_app_data(t->ssl_ctx, t);
	if (SSL_CTX_set_min_proto_version(t->ssl_ctx, TLS1_2_VERSION) != 1) {
		q_err(error_r, "TLS minimum version: %s",
		      ssl_errstr(eb, sizeof(eb)));
		goto fail;
	}
	SSL_CTX_set_session_cache_mode(t->ssl_ctx, SSL_SESS_CACHE_CLIENT |
				       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(t->ssl_ctx, new_session_cb);
	SSL_CTX_set_verify(t->ssl_ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_options(t->ssl_ctx, SSL_OP_NO_RENEGOTIATION);

	if (o != NULL && o->ca != NULL) {
		struct stat st;
		int ok;

		if (strcmp(o->ca, "system") == 0)
			ok = SSL_CTX_set_default_verify_paths(t->ssl_ctx);
		else if (stat(o->ca, &st) == 0 && S_ISDIR(st.st_mode))
			ok = SSL_CTX_load_verify_locations(t->ssl_ctx, NULL,
							   o->ca);
		else
			ok = SSL_CTX_load_verify_locations(t->ssl_ctx, o->ca,
							   NULL);
		if (ok != 1) {
			q_err(error_r, "TLS CA %s: %s", o->ca,
			      ssl_errstr(eb, sizeof(eb)));
			goto fail;
		}
	}
	if (o != NULL && o->cert != NULL) {
		const char *key = o->key != NULL ? o->key : o->cert;

		if (SSL_CTX_use_certificate_chain_file(t->ssl_ctx, o->cert) != 1) {
			q_err(error_r, "TLS certificate %s: %s", o->cert,
			      ssl_errstr(eb, sizeof(eb)));
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(t->ssl_ctx, key,
						SSL_FILETYPE_PEM) != 1) {
			q_err(error_r, "TLS private key %s: %s", key,
			      ssl_errstr(eb, sizeof(eb)));
			goto fail;
		}
		if (SSL_CTX_check_private_key(t->ssl_ctx) != 1) {
			q_err(error_r, "TLS private key %s does not match %s: "
			      "%s", key, o->cert, ssl_errstr(eb, sizeof(eb)));
			goto fail;
		}
	} else if (o != NULL && o->key != NULL) {
		q_err(error_r, "TLS private key %s given without a "
		      "certificate", o->key);
		goto fail;
	}
	*ctx_r = t;
	return 0;
fail:
	SSL_CTX_free(t->ssl_ctx);
	pthread_mutex_destroy(&t->mu);
	free(t);
	return -1;
}

void q_tls_ctx_free(struct q_tls_ctx **tp)
{
	struct q_tls_ctx *t;

	if (tp == NULL || *tp == NULL)
		return;
	t = *tp;
	*tp = NULL;
	while (t->oldest != NULL)
		sess_drop(t, t->oldest);
	SSL_CTX_free(t->ssl_ctx);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* ------------------------------------------------------------------ */
/* the connection */

struct q_smtp_conn {
	int fd;
	SSL *ssl;
	BIO *net;                    /* our side of the BIO pair */
	struct q_tls_ctx *tls;
	char *sess_key;              /* session cache key, or NULL */
	bool have_tls, resumed;
	bool broken, dirty;
	bool server_left;            /* broken by a 421 between transactions
				        (its reply stays in reply) */
	unsigned exts;
	unsigned long long max_size;
	bool body8;            /* the next transactions' data is 8-bit */
	long long cmd_ms, data_ms, final_ms;
	long long size_addition;
	_Atomic(const char *) state;
	_Atomic uint64_t bytes_out;
	unsigned msgs;
	char peer_ip[INET6_ADDRSTRLEN];
	char tls_info[96];
	struct q_reply_parser *rp;
	size_t rpos, rlen;
	struct q_buf out;            /* commands waiting to be written */
	char *dbuf;                  /* BLOCK_SIZE + 8, on first send */
	struct q_reply reply;        /* the last reply read */
	char rbuf[RBUF_SIZE];
};

static const char *conn_sess_key(const struct q_smtp_conn *c)
{
	return c->sess_key;
}

static void set_state(struct q_smtp_conn *c, const char *s)
{
	atomic_store_explicit(&c->state, s, memory_order_relaxed);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long secs_to_ms(long long s, long long dflt)
{
	if (s <= 0)
		return dflt * 1000;
	if (s > LLONG_MAX / 2000)
		return LLONG_MAX / 2;
	return s * 1000;
}

static int eset(struct q_smtp_err *e, const char *kind, int code, int err,
		bool permanent, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static int eset(struct q_smtp_err *e, const char *kind, int code, int err,
		bool permanent, const char *fmt, ...)
{
	va_list ap;

	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	e->code = code;
	e->err = err;
	e->permanent = permanent;
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
	return -1;
}

/* An error caused by the last reply: "what: 550 text". */
static int ereply(struct q_smtp_conn *c, struct q_smtp_err *e,
		  const char *kind, bool permanent, const char *what)
{
	return eset(e, kind, c->reply.code, 0, permanent, "%s: %d %s", what,
		    c->reply.code, c->reply.text);
}

/* A connection fault: the dialogue cannot continue. */
static int efault(struct q_smtp_conn *c, struct q_smtp_err *e,
		  const char *kind, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int efault(struct q_smtp_conn *c, struct q_smtp_err *e,
		  const char *kind, int err, const char *fmt, ...)
{
	va_list ap;

	c->broken = true;
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	e->code = 0;
	e->err = err;
	e->permanent = false;
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
	return -1;
}

static int io_errno_fault(struct q_smtp_conn *c, struct q_smtp_err *e,
			  int err, const char *what)
{
	if (err == ETIMEDOUT)
		return efault(c, e, "timeout", err, "timeout %s", what);
	return efault(c, e, "lost_connection", err, "connection lost %s: %s",
		      what, strerror(err));
}

/* Wait until fd is ready for ev or the deadline (monotonic ms; < 0 means
 * none) passes. 0, or -1 with errno (ETIMEDOUT at the deadline). */
static int wait_fd(int fd, short ev, long long deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = ev };
		int to = -1, r;

		if (deadline >= 0) {
			long long left = deadline - now_ms();

			if (left <= 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			to = left > INT_MAX ? INT_MAX : (int)left;
		}
		r = poll(&pfd, 1, to);
		if (r > 0)
			return 0;       /* ready, or an error the next call sees */
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* Write all n bytes to the socket before the deadline. */
static int sock_write(struct q_smtp_conn *c, const char *p, size_t n,
		      long long deadline, const char *what,
		      struct q_smtp_err *e)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_fd(c->fd, POLLOUT, deadline) < 0)
				return io_errno_fault(c, e, errno, what);
			continue;
		}
		return io_errno_fault(c, e, w < 0 ? errno : EPIPE, what);
	}
	return 0;
}

/* Send whatever TLS has produced in the BIO pair. */
static int net_flush(struct q_smtp_conn *c, long long deadline,
		     const char *what, struct q_smtp_err *e)
{
	for (;;) {
		char *p;
		int n = BIO_nread0(c->net, &p);

		if (n <= 0)
			return 0;
		if (sock_write(c, p, (size_t)n, deadline, what, e) < 0)
			return -1;
		BIO_nread(c->net, &p, n);
	}
}

/* Move bytes from the socket into the BIO pair for TLS to read. */
static int net_fill(struct q_smtp_conn *c, long long deadline,
		    const char *what, struct q_smtp_err *e)
{
	char *p;
	int room = BIO_nwrite0(c->net, &p);

	if (room <= 0)
		return efault(c, e, "protocol", 0, "TLS input buffer full %s",
			      what);
	for (;;) {
		ssize_t r;

		if (wait_fd(c->fd, POLLIN, deadline) < 0)
			return io_errno_fault(c, e, errno, what);
		r = recv(c->fd, p, (size_t)room, 0);
		if (r > 0) {
			BIO_nwrite(c->net, &p, (int)r);
			return 0;
		}
		if (r == 0)
			return efault(c, e, "lost_connection", 0,
				      "connection closed by the server %s",
				      what);
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return io_errno_fault(c, e, errno, what);
	}
}

/* A failed SSL_read/SSL_write/SSL_connect that is not a retry. */
static int tls_fault(struct q_smtp_conn *c, struct q_smtp_err *e, int err,
		     const char *what)
{
	char eb[256];

	if (err == SSL_ERROR_ZERO_RETURN)
		return efault(c, e, "lost_connection", 0, "TLS session closed "
			      "by the server %s", what);
	return efault(c, e, "lost_connection", 0, "TLS error %s: %s", what,
		      ssl_errstr(eb, sizeof(eb)));
}

/* Write p[0..n) on the connection (TLS or not) before the deadline. */
static int conn_write(struct q_smtp_conn *c, const char *p, size_t n,
		      long long deadline, const char *what,
		      struct q_smtp_err *e)
{
	size_t total = n;

	if (c->broken)
		return efault(c, e, "lost_connection", 0,
			      "connection not usable %s", what);
	if (c->ssl == NULL) {
		if (sock_write(c, p, n, deadline, what, e) < 0)
			return -1;
	} else {
		while (n > 0) {
			int chunk = n > INT_MAX / 2 ? INT_MAX / 2 : (int)n;
			int r, err;

			ERR_clear_error();
			r = SSL_write(c->ssl, p, chunk);
			if (r > 0) {
				p += r;
				n -= (size_t)r;
				continue;
			}
			err = SSL_get_error(c->ssl, r);
			if (err == SSL_ERROR_WANT_WRITE) {
				if (net_flush(c, deadline, what, e) < 0)
					return -1;
			} else if (err == SSL_ERROR_WANT_READ) {
				if (net_flush(c, deadline, what, e) < 0 ||
				    net_fill(c, deadline, what, e) < 0)
					return -1;
			} else {
				return tls_fault(c, e, err, what);
			}
		}
		if (net_flush(c, deadline, what, e) < 0)
			return -1;
	}
	atomic_fetch_add_explicit(&c->bytes_out, total, memory_order_relaxed);
	return 0;
}

/* Write and empty the command buffer. */
static int flush_out(struct q_smtp_conn *c, long long deadline,
		     const char *what, struct q_smtp_err *e)
{
	int r = conn_write(c, c->out.data, c->out.len, deadline, what, e);

	q_buf_reset(&c->out);
	return r;
}

/* Refill the input buffer (which must be empty) before the deadline. */
static int conn_fill(struct q_smtp_conn *c, long long deadline,
		     const char *what, struct q_smtp_err *e)
{
	c->rpos = c->rlen = 0;
	if (c->ssl == NULL) {
		for (;;) {
			ssize_t r;

			if (wait_fd(c->fd, POLLIN, deadline) < 0)
				return io_errno_fault(c, e, errno, what);
			r = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);
			if (r > 0) {
				c->rlen = (size_t)r;
				return 0;
			}
			if (r == 0)
				return efault(c, e, "lost_connection", 0,
					      "connection closed by the server "
					      "%s", what);
			if (errno != EINTR && errno != EAGAIN &&
			    errno != EWOULDBLOCK)
				return io_errno_fault(c, e, errno, what);
		}
	}
	for (;;) {
		int r, err;

		ERR_clear_error();
		r = SSL_read(c->ssl, c->rbuf, (int)sizeof(c->rbuf));
		if (r > 0) {
			c->rlen = (size_t)r;
			return 0;
		}
		err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ) {
			/* TLS may have something to say first (key update) */
			if (net_flush(c, deadline, what, e) < 0 ||
			    net_fill(c, deadline, what, e) < 0)
				return -1;
		} else if (err == SSL_ERROR_WANT_WRITE) {
			if (net_flush(c, deadline, what, e) < 0)
				return -1;
		} else {
			return tls_fault(c, e, err, what);
		}
	}
}

/* Read one reply into c->reply within timeout_ms from now. */
static int read_reply(struct q_smtp_conn *c, long long timeout_ms,
		      const char *what, struct q_smtp_err *e)
{
	long long deadline = now_ms() + timeout_ms;

	if (c->broken)
		return efault(c, e, "lost_connection", 0,
			      "connection not usable %s", what);
	for (;;) {
		if (c->rpos < c->rlen) {
			int done;
			const char *perr = NULL;
			size_t used = q_reply_feed(c->rp, c->rbuf + c->rpos,
						   c->rlen - c->rpos, &c->reply,
						   &done, &perr);

			c->rpos += used;
			if (done > 0) {
				if (c->reply.code == 421)
					c->broken = true;  /* server is leaving */
				return 0;
			}
			if (done < 0)
				return efault(c, e, "protocol", 0,
					      "malformed reply %s: %s", what,
					      perr);
		}
		if (conn_fill(c, deadline, what, e) < 0)
			return -1;
	}
}

static bool code2(int code)
{
	return code >= 200 && code < 300;
}

/* Bytes the server sent that no command asked for are in the input
 * buffer (between transactions). If they hold a whole 421 reply (a
 * server that says goodbye right after the reply to the final dot, in
 * the same read), the server is leaving: the connection is marked
 * broken and server_left, the reply kept in c->reply, and true is
 * returned. Anything else (another reply, a partial one, garbage) is
 * left in the buffer untouched for the caller's protocol error; only
 * buffered bytes are looked at, nothing is read from the socket (a 421
 * split across reads, or still inside the TLS layer, is not seen). */
static bool unasked_421(struct q_smtp_conn *c)
{
	struct q_reply r;
	const char *perr = NULL;
	int done = 0;
	size_t used;

	if (c->broken || c->rpos >= c->rlen)
		return false;
	used = q_reply_feed(c->rp, c->rbuf + c->rpos, c->rlen - c->rpos, &r,
			    &done, &perr);
	if (done <= 0 || r.code != 421) {
		q_reply_parser_reset(c->rp);
		return false;
	}
	c->rpos += used;
	c->reply = r;
	c->broken = true;
	c->server_left = true;
	return true;
}

/* The start of a transaction on a connection the server left with a
 * 421 between transactions: the dialogue breaks at the transaction's
 * first command (RSET, or MAIL), before any reply to it, so the caller
 * sees a connection closed between messages (kind "lost_connection",
 * code 0, state "rset" or "mail"); the 421 is in the text. */
static int left_between(struct q_smtp_conn *c, bool rset,
			struct q_smtp_err *e)
{
	set_state(c, rset ? "rset" : "mail");
	return eset(e, "lost_connection", 0, 0, false, "connection closed by "
		    "the server after the last transaction: %d %s",
		    c->reply.code, c->reply.text);
}

/* Send one command (already in c->out) and read its reply. */
static int command(struct q_smtp_conn *c, const char *what,
		   struct q_smtp_err *e)
{
	if (flush_out(c, now_ms() + c->cmd_ms, what, e) < 0)
		return -1;
	return read_reply(c, c->cmd_ms, what, e);
}

static bool has_ctl(const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f || i >= max)
			return true;
	return false;
}

static bool has_8bit(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 ||
		inet_pton(AF_INET6, s, buf) == 1;
}

/* ---- connect ---- */

static int parse_ip(const char *ip, unsigned port, struct sockaddr_storage *ss,
		    socklen_t *len_r)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*len_r = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*len_r = sizeof(*s6);
		return 0;
	}
	return -1;
}

static int tcp_connect(struct q_smtp_conn *c, const struct q_smtp_opts *o,
		       const char *ip, unsigned port, struct q_smtp_err *e)
{
	struct sockaddr_storage ss, bs;
	socklen_t sl, bl;
	long long deadline = o->connect_timeout > 0 ?
		now_ms() + secs_to_ms(o->connect_timeout, 0) : -1;
	int one = 1, err = 0;
	socklen_t errlen = sizeof(err);

	if (port == 0 || port > 65535 || parse_ip(ip, port, &ss, &sl) < 0)
		return eset(e, "connect", 0, EINVAL, false,
			    "bad address to connect to: %s port %u", ip, port);
	c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0);
	if (c->fd < 0)
		return eset(e, "connect", 0, errno, false, "socket: %s",
			    strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (o->keepalive)
		setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	/* like Exim's interface option: an address of the other family is
	 * ignored */
	if (o->bind_ip != NULL && o->bind_ip[0] != '\0') {
		if (parse_ip(o->bind_ip, 0, &bs, &bl) < 0)
			return eset(e, "connect", 0, EINVAL, false,
				    "bad source address %s", o->bind_ip);
		if (bs.ss_family == ss.ss_family &&
		    bind(c->fd, (struct sockaddr *)&bs, bl) < 0)
			return eset(e, "connect", 0, errno, false,
				    "bind to %s: %s", o->bind_ip,
				    strerror(errno));
	}
	if (connect(c->fd, (struct sockaddr *)&ss, sl) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR) {
		err = errno;
	} else if (wait_fd(c->fd, POLLOUT, deadline) < 0) {
		err = errno;
	} else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0) {
		err = errno;
	}
	if (err == 0)
		return 0;
	if (err == ECONNREFUSED)
		return eset(e, "refused", 0, err, false,
			    "connection refused by %s port %u", ip, port);
	if (err == ETIMEDOUT)
		return eset(e, "timeout_connect", 0, err, false,
			    "connect to %s port %u timed out", ip, port);
	return eset(e, "connect", 0, err, false, "connect to %s port %u: %s",
		    ip, port, strerror(err));
}

/* ---- EHLO ---- */

static void parse_exts(struct q_smtp_conn *c)
{
	static const struct { const char *kw; unsigned bit; } kws[] = {
		{ "PIPELINING", Q_EXT_PIPELINING },
		{ "SIZE", Q_EXT_SIZE },
		{ "8BITMIME", Q_EXT_8BITMIME },
		{ "STARTTLS", Q_EXT_STARTTLS },
		{ "ENHANCEDSTATUSCODES", Q_EXT_ENHANCED },
		{ "SMTPUTF8", Q_EXT_SMTPUTF8 },
		{ "CHUNKING", Q_EXT_CHUNKING },
	};
	const char *p = memchr(c->reply.text, '\n', c->reply.textlen);
	const char *end = c->reply.text + c->reply.textlen;

	c->exts = 0;
	c->max_size = 0;
	while (p != NULL && p < end) {
		const char *line = p + 1, *eol = memchr(line, '\n',
						       (size_t)(end - line));
		size_t len, kwl, i;

		if (eol == NULL)
			eol = end;
		len = (size_t)(eol - line);
		p = eol;
		for (i = 0; i < sizeof(kws) / sizeof(kws[0]); i++) {
			kwl = strlen(kws[i].kw);
			if (len < kwl || strncasecmp(line, kws[i].kw, kwl) != 0 ||
			    (len > kwl && line[kwl] != ' ' && line[kwl] != '='))
				continue;
			c->exts |= kws[i].bit;
			if (kws[i].bit == Q_EXT_SIZE) {
				unsigned long long v = 0;
				size_t j = kwl;
				bool digits = false;

				while (j < len && line[j] == ' ')
					j++;
				while (j < len && line[j] >= '0' &&
				       line[j] <= '9') {
					unsigned d = (unsigned)(line[j] - '0');

					if (v > (ULLONG_MAX - d) / 10) {
						v = 0;   /* absurd: no limit */
						digits = false;
						break;
					}
					v = v * 10 + d;
					digits = true;
					j++;
				}
				c->max_size = digits ? v : 0;
			}
			break;
		}
	}
}

static int ehlo(struct q_smtp_conn *c, const char *helo, struct q_smtp_err *e)
{
	set_state(c, "ehlo");
	c->exts = 0;
	c->max_size = 0;
	if (q_buf_printf(&c->out, "EHLO %s\r\n", helo) < 0)
		return eset(e, "local", 0, ENOMEM, false, "out of memory");
	if (command(c, "waiting for the reply to EHLO", e) < 0)
		return -1;
	if (code2(c->reply.code)) {
		parse_exts(c);
		return 0;
	}
	if (c->reply.code < 500)
		return ereply(c, e, "helo", false, "EHLO refused");
	if (q_buf_printf(&c->out, "HELO %s\r\n", helo) < 0)
		return eset(e, "local", 0, ENOMEM, false, "out of memory");
	if (command(c, "waiting for the reply to HELO", e) < 0)
		return -1;
	if (!code2(c->reply.code))
		return ereply(c, e, "helo", false, "HELO refused");
	return 0;
}

/* ---- STARTTLS ---- */

static int tls_handshake(struct q_smtp_conn *c, const struct q_smtp_opts *o,
			 struct q_smtp_err *e)
{
	const char *what = "during the TLS handshake";
	long long deadline = now_ms() + c->cmd_ms;
	const char *name = o->verify_name;
	BIO *inner = NULL;
	SSL_SESSION *sess = NULL;
	char eb[256];
	int r, err;

	ERR_clear_error();
	c->ssl = SSL_new(o->tls->ssl_ctx);
	if (c->ssl == NULL)
		return efault(c, e, "local", ENOMEM, "SSL_new: %s",
			      ssl_errstr(eb, sizeof(eb)));
	c->tls = o->tls;
	SSL_set_app_data(c->ssl, c);
	if (BIO_new_bio_pair(&inner, NET_OUT, &c->net, NET_IN) != 1)
		return efault(c, e, "local", ENOMEM, "BIO pair: %s",
			      ssl_errstr(eb, sizeof(eb)));
	SSL_set_bio(c->ssl, inner, inner);
	SSL_set_connect_state(c->ssl);
	if (name != NULL && name[0] != '\0' && !is_ip_literal(name) &&
	    SSL_set_tlsext_host_name(c->ssl, name) != 1)
		return efault(c, e, "local", 0, "SNI %s: %s", name,
			      ssl_errstr(eb, sizeof(eb)));
	if (o->verify) {
		const char *check = name != NULL && name[0] != '\0' ?
			name : c->peer_ip;

		SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
		SSL_set_hostflags(c->ssl,
				  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (is_ip_literal(check) ?
		    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
						  check) != 1 :
		    SSL_set1_host(c->ssl, check) != 1)
			return efault(c, e, "local", 0,
				      "cannot check the name %s: %s", check,
				      ssl_errstr(eb, sizeof(eb)));
	}
	if (o->cache_key != NULL && o->cache_key[0] != '\0') {
		const char *v = o->verify ? (name != NULL ? name : c->peer_ip)
			: "-";
		size_t n = strlen(o->cache_key) + strlen(v) + 2;

		c->sess_key = malloc(n);
		if (c->sess_key != NULL) {
			snprintf(c->sess_key, n, "%s|%s", o->cache_key, v);
			sess = sess_get(o->tls, c->sess_key);
			if (sess != NULL) {
				SSL_set_session(c->ssl, sess);
				SSL_SESSION_free(sess);
			}
		}
	}
	for (;;) {
		ERR_clear_error();
		r = SSL_connect(c->ssl);
		err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
		if (net_flush(c, deadline, what, e) < 0)
			goto failed;
		if (r == 1)
			break;
		if (err == SSL_ERROR_WANT_READ) {
			if (net_fill(c, deadline, what, e) < 0)
				goto failed;
		} else if (err != SSL_ERROR_WANT_WRITE) {
			long vr = SSL_get_verify_result(c->ssl);

			if (o->verify && vr != X509_V_OK)
				eset(e, "tls_required", 0, 0, false,
				     "TLS certificate verification failed for "
				     "%s: %s", name != NULL ? name : c->peer_ip,
				     X509_verify_cert_error_string(vr));
			else
				eset(e, "lost_connection", 0, 0, false,
				     "TLS handshake failed: %s",
				     ssl_errstr(eb, sizeof(eb)));
			c->broken = true;
			goto failed;
		}
	}
	if (o->verify && SSL_get_verify_result(c->ssl) != X509_V_OK) {
		long vr = SSL_get_verify_result(c->ssl);

		c->broken = true;
		eset(e, "tls_required", 0, 0, false, "TLS certificate "
		     "verification failed for %s: %s",
		     name != NULL ? name : c->peer_ip,
		     X509_verify_cert_error_string(vr));
		goto failed;
	}
	c->have_tls = true;
	c->resumed = SSL_session_reused(c->ssl) == 1;
	snprintf(c->tls_info, sizeof(c->tls_info), "%s:%s",
		 SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	return 0;

failed:
	/* a session that led to a failure is not offered again */
	if (c->sess_key != NULL)
		sess_forget(o->tls, c->sess_key);
	if (strcmp(e->kind, "tls_required") == 0)
		return -1;
	/* timeouts and I/O faults during the handshake count as a failed
	 * handshake: required TLS defers, opportunistic TLS may retry in
	 * clear */
	{
		char text[sizeof(e->text)];

		memcpy(text, e->text, sizeof(text));
		if (o->require_tls)
			eset(e, "tls_required", 0, e->err, false, "%s", text);
		else
			eset(e, "tls_failed", 0, e->err, false, "%s", text);
		e->tls_failed = !o->require_tls;
	}
	return -1;
}

static int starttls(struct q_smtp_conn *c, const struct q_smtp_opts *o,
		    struct q_smtp_err *e)
{
	bool want = o->tls != NULL && !o->avoid_tls;

	if (!want || !(c->exts & Q_EXT_STARTTLS)) {
		if (o->require_tls)
			return eset(e, "tls_required", 0, 0, false,
				    !want ? "TLS is required but not to be "
				    "used with this host (no TLS context or "
				    "avoid_tls)" :
				    "TLS is required but the server does not "
				    "offer STARTTLS");
		return 0;
	}
	set_state(c, "starttls");
	if (q_buf_adds(&c->out, "STARTTLS\r\n") < 0)
		return eset(e, "local", 0, ENOMEM, false, "out of memory");
	if (command(c, "waiting for the reply to STARTTLS", e) < 0)
		return -1;
	if (c->reply.code != 220) {
		if (o->require_tls || c->reply.code == 421)
			return ereply(c, e, o->require_tls ? "tls_required" :
				      "starttls", false, "STARTTLS refused");
		return 0;    /* opportunistic: carry on in clear */
	}
	if (c->rpos < c->rlen) {
		/* bytes after the 220 were sent before TLS: an injection
		 * attempt or a broken server (CVE-2011-0411 class) */
		c->broken = true;
		if (o->require_tls)
			return eset(e, "tls_required", 0, 0, false,
				    "data after the reply to STARTTLS");
		eset(e, "tls_failed", 0, 0, false,
		     "data after the reply to STARTTLS");
		e->tls_failed = true;
		return -1;
	}
	if (tls_handshake(c, o, e) < 0)
		return -1;
	return ehlo(c, o->helo_name, e);
}

/* ---- open / close ---- */

static void conn_free(struct q_smtp_conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);   /* frees the inner BIO */
	if (c->net != NULL)
		BIO_free(c->net);
	if (c->fd >= 0)
		close(c->fd);
	q_reply_parser_free(&c->rp);
	q_buf_free(&c->out);
	free(c->dbuf);
	free(c->sess_key);
	free(c);
}

int q_smtp_open(const struct q_smtp_opts *o, const char *ip, unsigned port,
		struct q_smtp_conn **c_r, struct q_smtp_err *e)
{
	struct q_smtp_conn *c;

	memset(e, 0, sizeof(*e));
	*c_r = NULL;
	if (o->helo_name == NULL || o->helo_name[0] == '\0' ||
	    has_ctl(o->helo_name, 255) || strchr(o->helo_name, ' ') != NULL)
		return eset(e, "local", 0, EINVAL, false,
			    "bad name for EHLO/HELO");
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return eset(e, "local", 0, ENOMEM, false, "out of memory");
	c->fd = -1;
	c->rp = q_reply_parser_new();
	if (c->rp == NULL) {
		conn_free(c);
		return eset(e, "local", 0, ENOMEM, false, "out of memory");
	}
	c->cmd_ms = secs_to_ms(o->command_timeout, 300);
	c->data_ms = secs_to_ms(o->data_timeout, 300);
	c->final_ms = secs_to_ms(o->final_timeout, 600);
	c->size_addition = o->size_addition;
	snprintf(c->peer_ip, sizeof(c->peer_ip), "%s", ip);
	set_state(c, "banner");
	if (tcp_connect(c, o, ip, port, e) < 0) {
		conn_free(c);
		return -1;
	}
	if (read_reply(c, c->cmd_ms, "waiting for the banner", e) < 0)
		goto fail;
	if (!code2(c->reply.code)) {
		ereply(c, e, "banner", false, "connection refused by banner");
		goto fail;
	}
	if (ehlo(c, o->helo_name, e) < 0 || starttls(c, o, e) < 0)
		goto fail;
	set_state(c, "idle");
	*c_r = c;
	return 0;
fail:
	q_smtp_close(&c);
	return -1;
}

void q_smtp_close(struct q_smtp_conn **cp)
{
	struct q_smtp_conn *c;
	struct q_smtp_err e;

	if (cp == NULL || *cp == NULL)
		return;
	c = *cp;
	*cp = NULL;
	if (c->fd >= 0 && !c->broken && c->rpos == c->rlen) {
		long long to = c->cmd_ms < QUIT_TIMEOUT_MS ? c->cmd_ms :
			QUIT_TIMEOUT_MS;

		set_state(c, "quit");
		memset(&e, 0, sizeof(e));
		q_buf_reset(&c->out);
		if (q_buf_adds(&c->out, "QUIT\r\n") == 0 &&
		    flush_out(c, now_ms() + to, "sending QUIT", &e) == 0)
			read_reply(c, to, "waiting for the reply to QUIT", &e);
		if (c->ssl != NULL && !c->broken) {
			/* close_notify, without waiting for the peer's */
			ERR_clear_error();
			SSL_shutdown(c->ssl);
			net_flush(c, now_ms() + (to < 1000 ? to : 1000),
				  "sending close_notify", &e);
		}
	}
	ERR_clear_error();
	conn_free(c);
}

/* ---- accessors ---- */

unsigned q_smtp_exts(const struct q_smtp_conn *c)
{
	return c->exts;
}

unsigned long long q_smtp_max_size(const struct q_smtp_conn *c)
{
	return (c->exts & Q_EXT_SIZE) ? c->max_size : 0;
}

const char *q_smtp_tls_info(const struct q_smtp_conn *c)
{
	return c->have_tls ? c->tls_info : NULL;
}

bool q_smtp_tls_resumed(const struct q_smtp_conn *c)
{
	return c->have_tls && c->resumed;
}

const char *q_smtp_peer_ip(const struct q_smtp_conn *c)
{
	return c->peer_ip;
}

uint64_t q_smtp_bytes_out(const struct q_smtp_conn *c)
{
	return atomic_load_explicit(&((struct q_smtp_conn *)c)->bytes_out,
				    memory_order_relaxed);
}

unsigned q_smtp_msgs(const struct q_smtp_conn *c)
{
	return c->msgs;
}

const char *q_smtp_state(const struct q_smtp_conn *c)
{
	return atomic_load_explicit(&((struct q_smtp_conn *)c)->state,
				    memory_order_relaxed);
}

bool q_smtp_usable(const struct q_smtp_conn *c)
{
	return c != NULL && !c->broken && c->fd >= 0;
}

/* ------------------------------------------------------------------ */
/* a transaction */

/* SIGPIPE handling for sendfile (which has no MSG_NOSIGNAL). */
struct sigpipe_guard {
	sigset_t old;
	bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
	sigset_t s, pend;

	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, &g->old);
	sigemptyset(&pend);
	sigpending(&pend);
	g->was_pending = sigismember(&pend, SIGPIPE) == 1;
}

static void sigpipe_unblock(struct sigpipe_guard *g, bool got_epipe)
{
	if (got_epipe && !g->was_pending) {
		sigset_t s;
		struct timespec zero = { 0, 0 };

		sigemptyset(&s);
		sigaddset(&s, SIGPIPE);
		while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Read exactly n bytes at off from the spool fd. */
static int spool_read(struct q_smtp_conn *c, int fd, char *buf, size_t n,
		      off_t off, struct q_smtp_err *e)
{
	while (n > 0) {
		ssize_t r = pread(fd, buf, n, off);

		if (r > 0) {
			buf += r;
			n -= (size_t)r;
			off += r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		/* the message cannot be completed: never send the dot */
		return efault(c, e, "local", r < 0 ? errno : 0,
			      "reading the message data: %s",
			      r < 0 ? strerror(errno) : "file shorter than "
			      "expected");
	}
	return 0;
}

static int send_data_sendfile(struct q_smtp_conn *c, int fd, off_t len,
			      struct q_smtp_err *e)
{
	const char *what = "sending the message data";
	struct sigpipe_guard g;
	off_t off = 0, block_start = 0;
	long long deadline = now_ms() + c->data_ms;
	bool epipe = false;
	char tail[2] = { 0, 0 };
	int rc = 0;

	sigpipe_block(&g);
	while (off < len) {
		size_t want = (size_t)(len - off) > BLOCK_SIZE ? BLOCK_SIZE :
			(size_t)(len - off);
		ssize_t w = sendfile(c->fd, fd, &off, want);

		if (w > 0) {
			if (off - block_start >= BLOCK_SIZE) {
				block_start = off;
				deadline = now_ms() + c->data_ms;
			}
			continue;
		}
		if (w == 0) {
			rc = efault(c, e, "local", 0, "reading the message "
				    "data: file shorter than expected");
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (wait_fd(c->fd, POLLOUT, deadline) < 0) {
				rc = io_errno_fault(c, e, errno, what);
				break;
			}
			continue;
		}
		epipe = errno == EPIPE;
		rc = io_errno_fault(c, e, errno, what);
		break;
	}
	sigpipe_unblock(&g, epipe);
	if (rc < 0)
		return -1;
	atomic_fetch_add_explicit(&c->bytes_out, (uint64_t)len,
				  memory_order_relaxed);
	if (spool_read(c, fd, tail, 2, len - 2, e) < 0)
		return -1;
	set_state(c, "dot");
	if (tail[0] == '\r' && tail[1] == '\n')
		return conn_write(c, ".\r\n", 3, now_ms() + c->data_ms, what, e);
	return conn_write(c, "\r\n.\r\n", 5, now_ms() + c->data_ms, what, e);
}

/* Stream len bytes of fd and the final dot. */
static int send_data(struct q_smtp_conn *c, int fd, off_t len,
		     struct q_smtp_err *e)
{
	const char *what = "sending the message data";
	off_t off = 0;
	char tail[2] = { 0, 0 };

	set_state(c, "data");
	if (c->ssl == NULL && len > BLOCK_SIZE)
		return send_data_sendfile(c, fd, len, e);
	if (len == 0) {
		set_state(c, "dot");
		return conn_write(c, ".\r\n", 3, now_ms() + c->data_ms, what, e);
	}
	while (off < len) {
		size_t n = (size_t)(len - off) > BLOCK_SIZE ? BLOCK_SIZE :
			(size_t)(len - off);

		if (spool_read(c, fd, c->dbuf, n, off, e) < 0)
			return -1;
		off += (off_t)n;
		if (n >= 2) {
			tail[0] = c->dbuf[n - 2];
			tail[1] = c->dbuf[n - 1];
		} else {
			tail[0] = tail[1];
			tail[1] = c->dbuf[0];
		}
		if (off == len) {
			if (tail[0] != '\r' || tail[1] != '\n') {
				memcpy(c->dbuf + n, "\r\n", 2);
				n += 2;
			}
			memcpy(c->dbuf + n, ".\r\n", 3);
			n += 3;
			set_state(c, "dot");   /* the block with the dot */
		}
		if (conn_write(c, c->dbuf, n, now_ms() + c->data_ms, what, e) < 0)
			return -1;
	}
	return 0;
}

static char *dup_text(const struct q_reply *r)
{
	char *s = malloc(r->textlen + 1);

	if (s != NULL)
		memcpy(s, r->text, r->textlen + 1);
	return s;
}

/* Append command k of the transaction to c->out. */
static int add_command(struct q_smtp_conn *c, size_t k, bool rset,
		       const char *sender, const char *const *rcpts, size_t n,
		       off_t len, bool utf8)
{
	struct q_buf *b = &c->out;

	if (rset) {
		if (k == 0)
			return q_buf_add(b, "RSET\r\n", 6);
		k--;
	}
	if (k == 0) {
		if (q_buf_add(b, "MAIL FROM:<", 11) < 0 ||
		    q_buf_adds(b, sender) < 0 || q_buf_addc(b, '>') < 0)
			return -1;
		if ((c->exts & Q_EXT_SIZE) && c->size_addition >= 0 &&
		    q_buf_printf(b, " SIZE=%llu", (unsigned long long)len +
				 (unsigned long long)c->size_addition) < 0)
			return -1;
		if (c->body8 && (c->exts & Q_EXT_8BITMIME) &&
		    q_buf_add(b, " BODY=8BITMIME", 14) < 0)
			return -1;
		if (utf8 && q_buf_add(b, " SMTPUTF8", 9) < 0)
			return -1;
		return q_buf_add(b, "\r\n", 2);
	}
	if (k <= n) {
		if (q_buf_add(b, "RCPT TO:<", 9) < 0 ||
		    q_buf_adds(b, rcpts[k - 1]) < 0)
			return -1;
		return q_buf_add(b, ">\r\n", 3);
	}
	return q_buf_add(b, "DATA\r\n", 6);
}

void q_smtp_set_body_8bit(struct q_smtp_conn *c, bool eightbit)
{
	c->body8 = eightbit;
}

int q_smtp_send(struct q_smtp_conn *c, bool rset, const char *sender,
		const char *const *rcpts, size_t n, int fd, off_t len,
		int *rcpt_codes, char **rcpt_texts, struct q_smtp_err *e)
{
	size_t i, ncmd, sent = 0, got = 0, naccepted = 0, first;
	bool pipe, utf8 = false, mail_failed = false, stop = false;
	struct q_smtp_err merr;         /* MAIL's refusal, once mail_failed */
	int rc = -1;

	memset(e, 0, sizeof(*e));
	for (i = 0; i < n; i++) {
		rcpt_codes[i] = 0;
		rcpt_texts[i] = NULL;
	}
	if (c->server_left && c->fd >= 0)
		return left_between(c, rset || c->dirty, e);
	if (c->broken || c->fd < 0)
		return eset(e, "lost_connection", 0, 0, false,
			    "connection not usable");
	if (unasked_421(c))
		return left_between(c, rset || c->dirty, e);
	if (c->rpos < c->rlen)
		return efault(c, e, "protocol", 0, "unexpected data from the "
			      "server before MAIL");
	if (n == 0 || len < 0 || (len > 0 && fd < 0))
		return eset(e, "local", 0, EINVAL, true,
			    "nothing to send (no recipients or no data)");
	/* never let an address smuggle a command onto the wire */
	if (has_ctl(sender, ADDR_MAX))
		return eset(e, "local", 0, EINVAL, true,
			    "sender address with control characters or too "
			    "long");
	utf8 = has_8bit(sender);
	for (i = 0; i < n; i++) {
		if (has_ctl(rcpts[i], ADDR_MAX))
			return eset(e, "local", 0, EINVAL, true,
				    "recipient address with control characters "
				    "or too long");
		utf8 = utf8 || has_8bit(rcpts[i]);
	}
	utf8 = utf8 && (c->exts & Q_EXT_SMTPUTF8);
	if ((c->exts & Q_EXT_SIZE) && c->max_size > 0 &&
	    (unsigned long long)len > c->max_size)
		return eset(e, "mail_5xx", 552, 0, true,
			    "message size %lld exceeds the server's limit of "
			    "%llu bytes (not sent)", (long long)len,
			    c->max_size);
	if (c->dbuf == NULL) {
		c->dbuf = malloc(BLOCK_SIZE + 8);
		if (c->dbuf == NULL)
			return eset(e, "local", 0, ENOMEM, false,
				    "out of memory");
	}
	rset = rset || c->dirty;
	pipe = (c->exts & Q_EXT_PIPELINING) != 0;
	ncmd = (rset ? 1 : 0) + 1 + n + 1;
	first = rset ? 1 : 0;           /* index of MAIL */
	q_buf_reset(&c->out);

	while (got < ncmd) {
		size_t k;

		if (sent == got) {
			/* nothing in flight: send the next group */
			if (stop)
				break;
			if (sent == ncmd - 1 && naccepted == 0) {
				/* every RCPT refused: no DATA (the next
				 * transaction starts with RSET) */
				rc = 0;
				goto out;
			}
			do {
				if (add_command(c, sent, rset, sender, rcpts,
						n, len, utf8) < 0) {
					eset(e, "local", 0, ENOMEM, false,
					     "out of memory");
					c->broken = sent > got;
					goto fail;
				}
				sent++;
			} while (pipe && sent < ncmd &&
				 c->out.len < PIPE_MAX_BYTES);
			set_state(c, got < first ? "rset" : got == first ?
				  "mail" : got < ncmd - 1 ? "rcpt" : "data");
			if (flush_out(c, now_ms() + c->cmd_ms,
				      "sending commands", e) < 0)
				goto fail;
		}
		k = got;
		if (read_reply(c, c->cmd_ms, k < first ? "waiting for the "
			       "reply to RSET" : k == first ? "waiting for "
			       "the reply to MAIL" : k < ncmd - 1 ?
			       "waiting for the reply to RCPT" : "waiting for "
			       "the reply to DATA", e) < 0)
			goto fail;
		got++;
		if (k < first) {                          /* RSET */
			if (!code2(c->reply.code)) {
				c->broken = true;
				ereply(c, e, "rset", false, "RSET refused");
				goto fail;
			}
			c->dirty = false;
			set_state(c, "mail");
		} else if (k == first) {                  /* MAIL */
			if (c->reply.code < 400 && !code2(c->reply.code)) {
				/* a 3xx to MAIL: the replies are out of step
				 * with the commands; nothing can be trusted */
				c->broken = true;
				eset(e, "protocol", 0, 0, false, "unexpected reply to MAIL FROM: %d %s",
				     c->reply.code, c->reply.text);
				goto fail;
			}
			if (!code2(c->reply.code)) {
				mail_failed = true;
				stop = true;
				ereply(c, e, c->reply.code >= 500 ? "mail_5xx" :
				       "mail_4xx", c->reply.code >= 500,
				       "MAIL FROM refused");
				merr = *e;
				if (c->broken)
					goto fail;
			} else {
				c->dirty = true;
				set_state(c, "rcpt");
			}
		} else if (k < ncmd - 1) {                /* RCPT */
			size_t r = k - first - 1;

			if (mail_failed)
				continue;
			if (c->reply.code < 400 && !code2(c->reply.code)) {
				/* a 354 (or any 3xx) to RCPT: replies out of
				 * step (a server answering pipelined commands
				 * in the wrong order); never take a later
				 * reply for another command's */
				c->broken = true;
				eset(e, "protocol", 0, 0, false, "unexpected reply to RCPT TO: %d %s",
				     c->reply.code, c->reply.text);
				goto fail;
			}
			if (c->reply.code == 421) {
				ereply(c, e, "rcpt_4xx", false,
				       "RCPT TO refused");
				goto fail;
			}
			rcpt_codes[r] = c->reply.code;
			if (code2(c->reply.code))
				naccepted++;
			else
				rcpt_texts[r] = dup_text(&c->reply);
			if (got == ncmd - 1)
				set_state(c, "data");
		} else {                                  /* DATA */
			if (c->reply.code == 354 &&
			    (mail_failed || naccepted == 0)) {
				/* RFC 2920 3.1: DATA accepted for nothing;
				 * send an empty message, ignore its fate */
				set_state(c, "dot");
				if (conn_write(c, ".\r\n", 3, now_ms() +
					       c->data_ms, "sending the final "
					       "dot", e) < 0 ||
				    read_reply(c, c->final_ms, "waiting for the "
					       "reply to an empty message", e)
				    < 0)
					goto fail;
				c->dirty = false;
				if (mail_failed)
					goto fail;
				rc = 0;
				goto out;
			}
			if (c->reply.code < 400 && c->reply.code != 354) {
				/* a 2xx (or other 3xx) to DATA is not an
				 * acceptance of the message: no data was sent.
				 * Out of step replies; defer everything. */
				c->broken = true;
				eset(e, "protocol", 0, 0, false, "unexpected reply to DATA (354 expected): %d %s",
				     c->reply.code, c->reply.text);
				goto fail;
			}
			if (c->reply.code != 354) {
				if (mail_failed)
					goto fail;
				if (naccepted == 0) {
					/* pipelined, every RCPT refused: each
					 * recipient has its answer */
					rc = 0;
					goto out;
				}
				/* every accepted recipient gets the reply */
				for (i = 0; i < n; i++) {
					if (!code2(rcpt_codes[i]))
						continue;
					rcpt_codes[i] = c->reply.code;
					rcpt_texts[i] = dup_text(&c->reply);
				}
				ereply(c, e, c->reply.code >= 500 ? "data_5xx" :
				       "data_4xx", c->reply.code >= 500,
				       "DATA refused");
				rc = -1;
				goto out;
			}
			if (send_data(c, fd, len, e) < 0)
				goto fail;
			set_state(c, "dot");
			if (read_reply(c, c->final_ms, "waiting for the reply "
				       "to the final dot", e) < 0)
				goto fail;
			c->dirty = false;
			for (i = 0; i < n; i++) {
				if (!code2(rcpt_codes[i]))
					continue;
				rcpt_codes[i] = c->reply.code;
				rcpt_texts[i] = dup_text(&c->reply);
			}
			if (code2(c->reply.code))
				c->msgs++;
			else
				ereply(c, e, c->reply.code >= 500 ? "data_5xx" :
				       "data_4xx", c->reply.code >= 500,
				       "message refused after the data");
			rc = 0;
			goto out;
		}
	}
	/* MAIL refused, its replies read (or no group left to send) */
	if (mail_failed)
		goto fail;
	rc = 0;
	goto out;

fail:
	/* MAIL's refusal is the transaction's outcome, whatever became of
	 * the replies to the commands pipelined behind it (a server that
	 * refuses MAIL and hangs up, or says 421 to the next RCPT): the
	 * fault that followed only broke the connection */
	if (mail_failed)
		*e = merr;
	/* recipients that were accepted are not decided */
	for (i = 0; i < n; i++) {
		if (rcpt_codes[i] != 0 && code2(rcpt_codes[i])) {
			rcpt_codes[i] = 0;
			free(rcpt_texts[i]);
			rcpt_texts[i] = NULL;
		}
	}
	rc = -1;
out:
	/* a broken connection keeps the state where it broke ("dot": the
	 * final dot may have reached the server) */
	if (!c->broken) {
		set_state(c, "idle");
		/* a 421 right behind the last reply: the server is leaving;
		 * the transaction's result stands */
		(void)unasked_421(c);
	}
	q_buf_reset(&c->out);
	return rc;
}
