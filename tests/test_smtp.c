/*
 * tests/test_smtp.c - suite_smtp: the SMTP client (q_smtp_*) against a
 * small scripted server that runs in a thread of the test (loopback, port
 * chosen by the kernel).
 *
 * The server ("srv") answers each command from its script, records every
 * command line with the number of the read (recv or SSL_read) that
 * delivered it - so a test can see that a pipelined group arrived in ONE
 * read, i.e. one write (one TLS record) of the client - and keeps the
 * raw data of the last message. It can stall, trickle, close mid-data,
 * send 421, and do STARTTLS with certificates the suite makes at set-up
 * (EC P-256 keys, a CA, a server certificate for mx.test.example and
 * 127.0.0.1, a client certificate, and an unrelated CA), written to a
 * t_tmpdir().
 *
 * Timeouts are 1 s; the stall and trickle cases take about that long.
 * The upper bounds on elapsed time in those cases are generous (5 s):
 * they tell a per-reply deadline from a per-read one, not speed.
 */
#include "config.h"
#include "q/smtp.h"
#include "q/util.h"
#include "tlib.h"
#include "tsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <CUnit/CUnit.h>

/* ------------------------------------------------------------------ */
/* certificates */

static char *tdir;
static char ca_pem[512], ca2_pem[512], srv_pem[512], srv_key[512];
static char cli_pem[512], cli_key[512];

static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *val)
{
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, ctx, nid, val);
	bool ok = ex != NULL && X509_add_ext(x, ex, -1) == 1;

	X509_EXTENSION_free(ex);
	return ok;
}

static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *signer, X509 *issuer,
		       const char *cn, bool ca, const char *san, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX v3;
	bool ok;

	if (x == NULL)
		return NULL;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer != NULL ?
			     X509_get_subject_name(issuer) : name);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	ok = add_ext(x, &v3, NID_basic_constraints,
		     ca ? "critical,CA:TRUE" : "CA:FALSE") &&
		add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (ok && ca)
		ok = add_ext(x, &v3, NID_key_usage,
			     "critical,keyCertSign,cRLSign");
	if (ok && san != NULL)
		ok = add_ext(x, &v3, NID_subject_alt_name, san);
	if (!ok || X509_sign(x, signer, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

static bool write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (f == NULL)
		return false;
	ok = x != NULL ? PEM_write_X509(f, x) == 1 :
		PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
	return fclose(f) == 0 && ok;
}

static int make_certs(void)
{
	EVP_PKEY *cak = EVP_EC_gen("P-256"), *ca2k = EVP_EC_gen("P-256");
	EVP_PKEY *sk = EVP_EC_gen("P-256"), *ck = EVP_EC_gen("P-256");
	X509 *ca = NULL, *ca2 = NULL, *sc = NULL, *cc = NULL;
	int rc = -1;

	if (cak == NULL || ca2k == NULL || sk == NULL || ck == NULL)
		goto out;
	ca = make_cert(cak, cak, NULL, "qkit test CA", true, NULL, 1);
	ca2 = make_cert(ca2k, ca2k, NULL, "qkit other CA", true, NULL, 2);
	if (ca == NULL || ca2 == NULL)
		goto out;
	sc = make_cert(sk, cak, ca, "mx.test.example", false,
		       "DNS:mx.test.example,IP:127.0.0.1", 3);
	cc = make_cert(ck, cak, ca, "client.test", false, "DNS:client.test",
		       4);
	if (sc == NULL || cc == NULL)
		goto out;
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tdir);
	snprintf(ca2_pem, sizeof(ca2_pem), "%s/ca2.pem", tdir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/srv.pem", tdir);
	snprintf(srv_key, sizeof(srv_key), "%s/srv.key", tdir);
	snprintf(cli_pem, sizeof(cli_pem), "%s/cli.pem", tdir);
	snprintf(cli_key, sizeof(cli_key), "%s/cli.key", tdir);
	if (write_pem(ca_pem, ca, NULL) && write_pem(ca2_pem, ca2, NULL) &&
	    write_pem(srv_pem, sc, NULL) && write_pem(srv_key, NULL, sk) &&
	    write_pem(cli_pem, cc, NULL) && write_pem(cli_key, NULL, ck))
		rc = 0;
out:
	X509_free(ca);
	X509_free(ca2);
	X509_free(sc);
	X509_free(cc);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(ca2k);
	EVP_PKEY_free(sk);
	EVP_PKEY_free(ck);
	return rc;
}

/* ------------------------------------------------------------------ */
/* the scripted server */

#define MAXCMD 512

struct srv_cmd {
	char line[128];        /* the command line, CRLF removed, cut */
	int batch;             /* number of the read that completed it */
	int conn;              /* connection number, from 1 */
	bool tls;
};

struct srv {
	/* script (NULL fields get defaults in srv_start) */
	const char *banner, *ehlo, *ehlo_tls, *helo, *starttls, *mail, *data,
		*dot;
	const char *stall_on;    /* verb: read it, never answer */
	const char *trickle_on;  /* verb: answer one byte per 100 ms, forever */
	const char *close_on;    /* verb: read it, close without answer */
	const char *garbage_after_starttls; /* sent instead of a handshake */
	long close_after_data;   /* > 0: close after that many data bytes */
	bool tls;                /* can do the handshake */
	int tls_max;             /* 0, or e.g. TLS1_2_VERSION */
	bool want_client_cert;
	bool stall_after_data;   /* read the data, never answer the dot */
	const struct q_smtp_conn *watch; /* client state seen at a stall */
	/* runtime */
	int lfd, port, stop[2];
	pthread_t th;
	SSL_CTX *sctx;
	/* records (read after srv_stop) */
	int nconn, handshakes, resumed, client_certs, batches;
	char sni[64];            /* server name sent by the client */
	char peer[64];           /* client address of the last connection */
	int nrcpt;               /* RCPT commands received (all of them) */
	char stall_state[16];    /* q_smtp_state(watch) at the stall */
	struct srv_cmd cmd[MAXCMD];
	int ncmd;
	struct q_buf got;        /* raw data of the last message, final dot
				    included */
	int nmsgs;
	long after_421;          /* bytes received after a 421 was sent */
};

struct sconn {
	struct srv *s;
	int fd;
	SSL *ssl;
	size_t pos, len;
	int batch;
	char buf[16384];
};

static int sc_fill(struct sconn *k)
{
	ssize_t r;

	if (k->ssl == NULL || SSL_pending(k->ssl) == 0) {
		struct pollfd p[2] = { { .fd = k->fd, .events = POLLIN },
				       { .fd = k->s->stop[0], .events = POLLIN } };

		while (poll(p, 2, -1) < 0)
			if (errno != EINTR)
				return -1;
		if (p[1].revents != 0)
			return -1;
	}
	if (k->ssl != NULL)
		r = SSL_read(k->ssl, k->buf, sizeof(k->buf));
	else
		r = recv(k->fd, k->buf, sizeof(k->buf), 0);
	if (r <= 0)
		return -1;
	k->pos = 0;
	k->len = (size_t)r;
	k->batch = ++k->s->batches;
	return 0;
}

static int sc_getc(struct sconn *k)
{
	if (k->pos == k->len && sc_fill(k) < 0)
		return -1;
	return (unsigned char)k->buf[k->pos++];
}

/* A command line without CRLF; -1 at EOF. */
static int sc_line(struct sconn *k, char *line, size_t size)
{
	size_t n = 0;
	int ch;

	while ((ch = sc_getc(k)) >= 0) {
		if (ch == '\n') {
			if (n > 0 && line[n - 1] == '\r')
				n--;
			line[n] = '\0';
			return 0;
		}
		if (n + 1 < size)
			line[n++] = (char)ch;
	}
	return -1;
}

static void sc_send(struct sconn *k, const char *s)
{
	if (k->ssl != NULL)
		SSL_write(k->ssl, s, (int)strlen(s));
	else
		send(k->fd, s, strlen(s), MSG_NOSIGNAL);
}

static bool verb_is(const char *line, const char *verb)
{
	size_t n = strlen(verb);

	return verb != NULL && strncasecmp(line, verb, n) == 0 &&
		(line[n] == '\0' || line[n] == ' ' || line[n] == ':');
}

/* Read until EOF; count the bytes that arrive from now on (what was
 * already read, e.g. the rest of a pipelined group, does not count). */
static long sc_drain(struct sconn *k)
{
	long n = 0;

	k->pos = k->len;
	while (sc_fill(k) == 0)
		n += (long)k->len;
	k->pos = k->len;
	return n;
}

static int srv_verify_cb(int ok, X509_STORE_CTX *ctx)
{
	(void)ok;
	(void)ctx;
	return 1;
}

static void srv_conn(struct srv *s, int fd)
{
	struct sconn *k = calloc(1, sizeof(*k));
	char line[4096];
	bool sent_421 = false;

	k->s = s;
	k->fd = fd;
	s->nconn++;
	sc_send(k, s->banner);
	if (strncmp(s->banner, "421", 3) == 0) {
		s->after_421 += sc_drain(k);
		goto out;
	}
	while (sc_line(k, line, sizeof(line)) == 0) {
		const char *reply;
		char buf[64];

		if (s->ncmd < MAXCMD) {
			struct srv_cmd *c = &s->cmd[s->ncmd++];

			snprintf(c->line, sizeof(c->line), "%.127s", line);
			c->batch = k->batch;
			c->conn = s->nconn;
			c->tls = k->ssl != NULL;
		}
		if (s->stall_on != NULL && verb_is(line, s->stall_on)) {
			if (s->watch != NULL)
				snprintf(s->stall_state, sizeof(s->stall_state),
					 "%s", q_smtp_state(s->watch));
			sc_drain(k);
			goto out;
		}
		if (s->close_on != NULL && verb_is(line, s->close_on))
			goto out;
		if (s->trickle_on != NULL && verb_is(line, s->trickle_on)) {
			static const char t[] = "250-slowly\r\n";
			size_t i;
			struct pollfd p = { .fd = s->stop[0], .events = POLLIN };

			for (i = 0; ; i++) {
				if (send(fd, &t[i % (sizeof(t) - 1)], 1,
					 MSG_NOSIGNAL) != 1)
					break;
				if (poll(&p, 1, 100) != 0)
					break;
			}
			goto out;
		}
		if (verb_is(line, "EHLO")) {
			reply = k->ssl != NULL ? s->ehlo_tls : s->ehlo;
		} else if (verb_is(line, "HELO")) {
			reply = s->helo;
		} else if (verb_is(line, "STARTTLS")) {
			sc_send(k, s->starttls);
			if (strncmp(s->starttls, "220", 3) != 0)
				continue;
			if (s->garbage_after_starttls != NULL) {
				sc_send(k, s->garbage_after_starttls);
				sc_drain(k);
				goto out;
			}
			if (!s->tls || k->ssl != NULL)
				goto out;
			k->ssl = SSL_new(s->sctx);
			SSL_set_fd(k->ssl, fd);
			if (SSL_accept(k->ssl) != 1)
				goto out;
			s->handshakes++;
			if (SSL_get_servername(k->ssl,
					       TLSEXT_NAMETYPE_host_name) != NULL)
				snprintf(s->sni, sizeof(s->sni), "%s",
					 SSL_get_servername(k->ssl,
						TLSEXT_NAMETYPE_host_name));
			if (SSL_session_reused(k->ssl))
				s->resumed++;
			{
				X509 *pc = SSL_get1_peer_certificate(k->ssl);

				if (pc != NULL)
					s->client_certs++;
				X509_free(pc);
			}
			k->pos = k->len = 0;
			continue;
		} else if (verb_is(line, "MAIL")) {
			reply = s->mail;
		} else if (verb_is(line, "RCPT")) {
			/* <cNNN-...@...> answers NNN, anything else 250 */
			const char *a = strchr(line, '<');

			s->nrcpt++;

			if (a != NULL && a[1] == 'c' && a[2] >= '2' &&
			    a[2] <= '5' && a[5] == '-') {
				snprintf(buf, sizeof(buf), "%.3s rcpt %.3s\r\n",
					 a + 2, a + 2);
				reply = buf;
			} else {
				reply = "250 2.1.5 rcpt ok\r\n";
			}
		} else if (verb_is(line, "DATA")) {
			int ch;

			sc_send(k, s->data);
			if (strncmp(s->data, "354", 3) != 0) {
				if (strncmp(s->data, "421", 3) == 0) {
					s->after_421 += sc_drain(k);
					goto out;
				}
				continue;
			}
			q_buf_reset(&s->got);
			for (;;) {
				ch = sc_getc(k);
				if (ch < 0)
					goto out;
				q_buf_addc(&s->got, (char)ch);
				if (s->close_after_data > 0 &&
				    (long)s->got.len >= s->close_after_data)
					goto out;
				if ((s->got.len == 3 &&
				     memcmp(s->got.data, ".\r\n", 3) == 0) ||
				    (s->got.len >= 5 &&
				     memcmp(s->got.data + s->got.len - 5,
					    "\r\n.\r\n", 5) == 0))
					break;
			}
			s->nmsgs++;
			if (s->stall_after_data) {
				if (s->watch != NULL)
					snprintf(s->stall_state,
						 sizeof(s->stall_state), "%s",
						 q_smtp_state(s->watch));
				sc_drain(k);
				goto out;
			}
			reply = s->dot;
		} else if (verb_is(line, "RSET") || verb_is(line, "NOOP")) {
			reply = "250 2.0.0 ok\r\n";
		} else if (verb_is(line, "QUIT")) {
			sc_send(k, "221 2.0.0 bye\r\n");
			goto out;
		} else {
			reply = "500 5.5.1 unknown command\r\n";
		}
		sc_send(k, reply);
		if (strncmp(reply, "421", 3) == 0) {
			sent_421 = true;
			break;
		}
	}
	if (sent_421)
		s->after_421 += sc_drain(k);
out:
	if (k->ssl != NULL) {
		SSL_shutdown(k->ssl);
		SSL_free(k->ssl);
	}
	free(k);
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	sigset_t pipeset;

	/* SIGPIPE from the server's writes stays here; the client thread
	 * keeps the default disposition, so a SIGPIPE raised by the client
	 * library would kill the test */
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipeset, NULL);

	for (;;) {
		struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN },
				       { .fd = s->stop[0], .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents != 0)
			break;
		struct sockaddr_in pa;
		socklen_t pl = sizeof(pa);

		fd = accept(s->lfd, (struct sockaddr *)&pa, &pl);
		if (fd < 0)
			continue;
		inet_ntop(AF_INET, &pa.sin_addr, s->peer, sizeof(s->peer));
		srv_conn(s, fd);
		close(fd);
	}
	return NULL;
}

#define EHLO_PIPE "250-mx.test.example hello\r\n250-PIPELINING\r\n" \
	"250-SIZE 10485760\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n" \
	"250 STARTTLS\r\n"
#define EHLO_TLS "250-mx.test.example hello again\r\n250-PIPELINING\r\n" \
	"250-SIZE 10485760\r\n250 ENHANCEDSTATUSCODES\r\n"
#define EHLO_PLAIN "250-mx.test.example hello\r\n250 SIZE\r\n"

static int srv_start(struct srv *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);

#define DEF(f, v) if (s->f == NULL) s->f = (v)
	DEF(banner, "220 mx.test.example ESMTP test\r\n");
	DEF(ehlo, EHLO_PIPE);
	DEF(ehlo_tls, EHLO_TLS);
	DEF(helo, "250 mx.test.example\r\n");
	DEF(starttls, "220 2.0.0 go ahead\r\n");
	DEF(mail, "250 2.1.0 sender ok\r\n");
	DEF(data, "354 go ahead\r\n");
	DEF(dot, "250 2.0.0 queued as X1\r\n");
#undef DEF
	if (pipe(s->stop) < 0)
		return -1;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->lfd, 16) < 0 ||
	    getsockname(s->lfd, (struct sockaddr *)&a, &al) < 0)
		return -1;
	s->port = ntohs(a.sin_port);
	if (s->tls) {
		s->sctx = SSL_CTX_new(TLS_server_method());
		if (s->sctx == NULL ||
		    SSL_CTX_use_certificate_file(s->sctx, srv_pem,
						 SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_use_PrivateKey_file(s->sctx, srv_key,
						SSL_FILETYPE_PEM) != 1)
			return -1;
		SSL_CTX_set_session_id_context(s->sctx,
					       (const unsigned char *)"qt", 2);
		if (s->tls_max != 0)
			SSL_CTX_set_max_proto_version(s->sctx, s->tls_max);
		if (s->want_client_cert)
			SSL_CTX_set_verify(s->sctx, SSL_VERIFY_PEER,
					   srv_verify_cb);
	}
	return pthread_create(&s->th, NULL, srv_main, s) == 0 ? 0 : -1;
}

static void srv_stop(struct srv *s)
{
	if (write(s->stop[1], "x", 1) != 1)
		return;
	pthread_join(s->th, NULL);
	close(s->lfd);
	close(s->stop[0]);
	close(s->stop[1]);
	SSL_CTX_free(s->sctx);
	s->sctx = NULL;
}

static void srv_free(struct srv *s)
{
	q_buf_free(&s->got);
	free(s);
}

static struct srv *srv_new(void)
{
	return calloc(1, sizeof(struct srv));
}

/* Index of the n-th (from 0) command starting with verb, or -1. */
static int find_cmd(const struct srv *s, const char *verb, int nth)
{
	int i;

	for (i = 0; i < s->ncmd; i++)
		if (verb_is(s->cmd[i].line, verb) && nth-- == 0)
			return i;
	return -1;
}

static int count_cmd(const struct srv *s, const char *verb)
{
	int i, n = 0;

	for (i = 0; i < s->ncmd; i++)
		if (verb_is(s->cmd[i].line, verb))
			n++;
	return n;
}

/* ------------------------------------------------------------------ */
/* client helpers */

static struct q_smtp_opts opts(void)
{
	struct q_smtp_opts o;

	memset(&o, 0, sizeof(o));
	o.helo_name = "client.test";
	o.connect_timeout = 2;
	o.command_timeout = 1;
	o.data_timeout = 1;
	o.final_timeout = 1;
	o.keepalive = true;
	o.bind_ip = "127.0.0.1";
	o.size_addition = 1024;
	return o;
}

/* A message file: fd open for reading, already unlinked. */
static int msg_fd(const char *data, size_t len)
{
	char path[600];
	int fd;
	static int seq;

	snprintf(path, sizeof(path), "%s/msg%d", tdir, ++seq);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		return -1;
	}
	unlink(path);
	return fd;
}

static void free_texts(char **t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(t[i]);
		t[i] = NULL;
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char MSG[] = "From: a@example.org\r\nSubject: t\r\n\r\nhello\r\n";

/* ------------------------------------------------------------------ */
/* tests */

static void test_ehlo_parse(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net" };
	int codes[1];
	char *texts[1];
	int fd;

	s->ehlo = "250-mx hello\r\n250-pipelining\r\n250-Size 1000\r\n"
		"250-8bitmime\r\n250-starttls\r\n250-EnhancedStatusCodes\r\n"
		"250-SMTPUTF8\r\n250-CHUNKING\r\n250 HELP\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT_EQUAL(q_smtp_exts(c), Q_EXT_PIPELINING | Q_EXT_SIZE |
			Q_EXT_8BITMIME | Q_EXT_STARTTLS | Q_EXT_ENHANCED |
			Q_EXT_SMTPUTF8 | Q_EXT_CHUNKING);
	CU_ASSERT_EQUAL(q_smtp_max_size(c), 1000);
	CU_ASSERT_PTR_NULL(q_smtp_tls_info(c));     /* no TLS context */
	CU_ASSERT_STRING_EQUAL(q_smtp_peer_ip(c), "127.0.0.1");
	CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "idle");
	CU_ASSERT(q_smtp_usable(c));

	/* bigger than SIZE: refused here, nothing sent */
	{
		char big[2000];

		memset(big, 'x', sizeof(big));
		memcpy(big + sizeof(big) - 2, "\r\n", 2);
		fd = msg_fd(big, sizeof(big));
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
					    (off_t)sizeof(big), codes, texts,
					    &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "mail_5xx");
		CU_ASSERT_EQUAL(e.code, 552);
		CU_ASSERT(e.permanent);
		CU_ASSERT_EQUAL(codes[0], 0);
		CU_ASSERT(q_smtp_usable(c));
		close(fd);
	}
	/* within SIZE: SIZE=len+size_addition; SMTPUTF8 for 8-bit
	 * addresses */
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	r[0] = "b\xc3\xa9@example.net";
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), 0);
	CU_ASSERT_EQUAL(codes[0], 250);
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	CU_ASSERT_PTR_NULL(c);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "MAIL"), 1);
	if (find_cmd(s, "MAIL", 0) >= 0) {
		char want[128];

		snprintf(want, sizeof(want), "MAIL FROM:<a@example.org> "
			 "SIZE=%zu SMTPUTF8", sizeof(MSG) - 1 + 1024);
		CU_ASSERT_STRING_EQUAL(s->cmd[find_cmd(s, "MAIL", 0)].line,
				       want);
	}
	CU_ASSERT_EQUAL(count_cmd(s, "QUIT"), 1);
	srv_free(s);

	/* SIZE without a number: offered, no limit; size_addition < 0:
	 * no SIZE= */
	s = srv_new();
	s->ehlo = EHLO_PLAIN;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.size_addition = -1;
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT_EQUAL(q_smtp_exts(c), Q_EXT_SIZE);
	CU_ASSERT_EQUAL(q_smtp_max_size(c), 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	r[0] = "b@example.net";
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), 0);
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT(find_cmd(s, "MAIL", 0) >= 0 &&
		  strcmp(s->cmd[find_cmd(s, "MAIL", 0)].line,
			 "MAIL FROM:<>") == 0);
	srv_free(s);

	/* keywords are whole words */
	s = srv_new();
	s->ehlo = "250-mx\r\n250-PIPELININGX\r\n250-SIZEX 5\r\n"
		"250-X8BITMIME\r\n250 STARTTLS-NOT\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT_EQUAL(q_smtp_exts(c), 0);
	q_smtp_close(&c);
	srv_stop(s);
	srv_free(s);
}

static void test_helo_fallback(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;

	s->ehlo = "502 5.5.2 what is EHLO\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT_EQUAL(q_smtp_exts(c), 0);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT(s->ncmd >= 2);
	CU_ASSERT_STRING_EQUAL(s->cmd[0].line, "EHLO client.test");
	CU_ASSERT_STRING_EQUAL(s->cmd[1].line, "HELO client.test");
	srv_free(s);

	/* a 4xx to EHLO is an error, no HELO */
	s = srv_new();
	s->ehlo = "451 4.3.0 later\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_STRING_EQUAL(e.kind, "helo");
	CU_ASSERT_EQUAL(e.code, 451);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "HELO"), 0);
	srv_free(s);

	/* HELO refused too */
	s = srv_new();
	s->ehlo = "500 no\r\n";
	s->helo = "550 go away\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "helo");
	CU_ASSERT_EQUAL(e.code, 550);
	CU_ASSERT(strstr(e.text, "go away") != NULL);
	srv_stop(s);
	srv_free(s);
}

/* Pipelining: [RSET] MAIL RCPT... DATA arrive in one read; results. */
static void run_pipelined(bool tls)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *ctx = NULL;
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net", "c@example.net", "d@example.net" };
	int codes[3], fd, i, m, base;
	char *texts[3];
	const char *err;
	uint64_t out0;

	s->tls = tls;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	if (tls) {
		CU_ASSERT_FATAL(q_tls_ctx_new(NULL, &ctx, &err) == 0);
		o.tls = ctx;
	}
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT((q_smtp_exts(c) & Q_EXT_PIPELINING) != 0);
	out0 = q_smtp_bytes_out(c);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	for (m = 0; m < 3; m++) {
		CU_ASSERT_EQUAL(q_smtp_send(c, m > 0, "a@example.org", r, 3, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), 0);
		for (i = 0; i < 3; i++) {
			CU_ASSERT_EQUAL(codes[i], 250);
			CU_ASSERT(texts[i] != NULL &&
				  strcmp(texts[i], "2.0.0 queued as X1") == 0);
		}
		free_texts(texts, 3);
		CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "idle");
	}
	CU_ASSERT_EQUAL(q_smtp_msgs(c), 3);
	CU_ASSERT(q_smtp_bytes_out(c) >= out0 + 3 * (sizeof(MSG) - 1 + 3));
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(s->nmsgs, 3);
	/* first group: MAIL RCPT RCPT RCPT DATA in one read */
	base = find_cmd(s, "MAIL", 0);
	CU_ASSERT_FATAL(base >= 0 && base + 4 < s->ncmd);
	for (i = 1; i <= 4; i++)
		CU_ASSERT_EQUAL(s->cmd[base + i].batch, s->cmd[base].batch);
	CU_ASSERT_STRING_EQUAL(s->cmd[base + 4].line, "DATA");
	CU_ASSERT_EQUAL(s->cmd[base].tls, tls);
	/* later groups: RSET MAIL RCPT RCPT RCPT DATA in one read */
	for (m = 0; m < 2; m++) {
		base = find_cmd(s, "RSET", m);
		CU_ASSERT_FATAL(base >= 0 && base + 5 < s->ncmd);
		CU_ASSERT(verb_is(s->cmd[base + 1].line, "MAIL"));
		for (i = 1; i <= 5; i++)
			CU_ASSERT_EQUAL(s->cmd[base + i].batch,
					s->cmd[base].batch);
	}
	/* nothing else rode along: QUIT came in a read of its own */
	i = find_cmd(s, "QUIT", 0);
	CU_ASSERT(i > 0 && s->cmd[i].batch != s->cmd[i - 1].batch);
	srv_free(s);
	q_tls_ctx_free(&ctx);
}

static void test_pipelined(void)
{
	run_pipelined(false);
}

static void test_pipelined_tls(void)
{
	run_pipelined(true);
}

/* A group too long for one write (2000 recipients, ~70 KB) goes out
 * in several pipelined writes, each answered before the next. */
static void test_long_group(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	enum { N = 2000 };
	char (*addr)[40] = malloc(N * sizeof(*addr));
	const char **r = malloc(N * sizeof(*r));
	int *codes = malloc(N * sizeof(int)), fd;
	char **texts = malloc(N * sizeof(char *));
	size_t i, good = 0;

	CU_ASSERT_FATAL(addr != NULL && r != NULL && codes != NULL &&
			texts != NULL);
	for (i = 0; i < N; i++) {
		snprintf(addr[i], sizeof(addr[i]), "%s%zu@example.net",
			 i % 100 == 7 ? "c452-" : "rcpt-number-", i);
		r[i] = addr[i];
	}
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, N, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), 0);
	for (i = 0; i < N; i++)
		if (codes[i] == (i % 100 == 7 ? 452 : 250))
			good++;
	CU_ASSERT_EQUAL(good, N);
	free_texts(texts, N);
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(s->nrcpt, N);
	CU_ASSERT_EQUAL(s->nmsgs, 1);
	/* more than one write, fewer than one per command */
	CU_ASSERT(s->batches > 4 && s->batches < 100);
	srv_free(s);
	free(addr);
	free(r);
	free(codes);
	free(texts);
}

/* Without PIPELINING: one command per read, in order; stop early. */
static void test_no_pipelining(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net", "c450-x@example.net" };
	int codes[2], fd, i, base;
	char *texts[2];

	s->ehlo = EHLO_PLAIN;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 2, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), 0);
	CU_ASSERT_EQUAL(codes[0], 250);
	CU_ASSERT_EQUAL(codes[1], 450);
	free_texts(texts, 2);
	CU_ASSERT_EQUAL(q_smtp_send(c, true, "a@example.org", r, 2, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), 0);
	free_texts(texts, 2);
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	base = find_cmd(s, "MAIL", 0);
	CU_ASSERT_FATAL(base > 0);
	for (i = 1; i < s->ncmd; i++)
		CU_ASSERT(s->cmd[i].batch > s->cmd[i - 1].batch);
	CU_ASSERT(verb_is(s->cmd[base + 1].line, "RCPT"));
	CU_ASSERT(verb_is(s->cmd[base + 2].line, "RCPT"));
	CU_ASSERT(verb_is(s->cmd[base + 3].line, "DATA"));
	CU_ASSERT(verb_is(s->cmd[base + 4].line, "RSET"));
	CU_ASSERT_EQUAL(s->nmsgs, 2);
	srv_free(s);
}

/* MAIL refused: no RCPT without pipelining; codes 0; usable. */
static void test_mail_refused(void)
{
	int pipe;

	for (pipe = 0; pipe < 2; pipe++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "b@example.net", "c@example.net" };
		int codes[2], fd;
		char *texts[2];

		s->ehlo = pipe ? EHLO_PIPE : EHLO_PLAIN;
		s->mail = "550 5.1.8 bad sender\r\n";
		s->data = "503 5.5.1 no valid recipients\r\n";
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "bad@example.org", r, 2,
					    fd, (off_t)sizeof(MSG) - 1, codes,
					    texts, &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "mail_5xx");
		CU_ASSERT_EQUAL(e.code, 550);
		CU_ASSERT(e.permanent);
		CU_ASSERT(strstr(e.text, "bad sender") != NULL);
		CU_ASSERT_EQUAL(codes[0], 0);
		CU_ASSERT_EQUAL(codes[1], 0);
		CU_ASSERT_PTR_NULL(texts[0]);
		CU_ASSERT(q_smtp_usable(c));
		close(fd);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(count_cmd(s, "RCPT"), pipe ? 2 : 0);
		CU_ASSERT_EQUAL(count_cmd(s, "QUIT"), 1);
		srv_free(s);
	}
}

/* RCPT 250/450/550 in one transaction, with and without pipelining. */
static void test_mixed_rcpt(void)
{
	int pipe;

	for (pipe = 0; pipe < 2; pipe++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "c450-a@example.net", "ok@example.net",
				    "c550-b@example.net", "ok2@example.net" };
		int codes[4], fd;
		char *texts[4];

		s->ehlo = pipe ? EHLO_PIPE : EHLO_PLAIN;
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 4, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), 0);
		CU_ASSERT_EQUAL(codes[0], 450);
		CU_ASSERT_EQUAL(codes[1], 250);
		CU_ASSERT_EQUAL(codes[2], 550);
		CU_ASSERT_EQUAL(codes[3], 250);
		CU_ASSERT(texts[0] != NULL && strcmp(texts[0], "rcpt 450") == 0);
		CU_ASSERT(texts[1] != NULL &&
			  strcmp(texts[1], "2.0.0 queued as X1") == 0);
		CU_ASSERT(texts[2] != NULL && strcmp(texts[2], "rcpt 550") == 0);
		free_texts(texts, 4);
		CU_ASSERT_EQUAL(q_smtp_msgs(c), 1);
		close(fd);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(s->nmsgs, 1);
		srv_free(s);
	}
}

/* Every RCPT refused: with pipelining DATA got 354, "." is sent (RFC
 * 2920 3.1); without, no DATA at all and the next transaction starts
 * with RSET even when not asked. */
static void test_all_rcpt_refused(void)
{
	int pipe;

	for (pipe = 0; pipe < 2; pipe++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "c550-a@example.net", "c451-b@example.net" };
		const char *r2[] = { "ok@example.net" };
		int codes[2], fd;
		char *texts[2];

		s->ehlo = pipe ? EHLO_PIPE : EHLO_PLAIN;
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 2, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), 0);
		CU_ASSERT_EQUAL(codes[0], 550);
		CU_ASSERT_EQUAL(codes[1], 451);
		free_texts(texts, 2);
		CU_ASSERT(q_smtp_usable(c));
		CU_ASSERT_EQUAL(q_smtp_msgs(c), 0);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r2, 1,
					    fd, (off_t)sizeof(MSG) - 1, codes,
					    texts, &e), 0);
		CU_ASSERT_EQUAL(codes[0], 250);
		free_texts(texts, 1);
		close(fd);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(count_cmd(s, "DATA"), pipe ? 2 : 1);
		CU_ASSERT_EQUAL(count_cmd(s, "RSET"), pipe ? 0 : 1);
		/* the last data is the real message */
		CU_ASSERT_EQUAL(s->nmsgs, pipe ? 2 : 1);
		srv_free(s);
	}
	/* pipelined, every RCPT refused, DATA refused as a real server
	 * does: 0, each recipient has its RCPT reply */
	{
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "c550-a@example.net", "c452-b@example.net" };
		int codes[2], fd;
		char *texts[2];

		s->data = "554 5.5.1 no valid recipients\r\n";
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 2, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), 0);
		CU_ASSERT_EQUAL(codes[0], 550);
		CU_ASSERT_EQUAL(codes[1], 452);
		CU_ASSERT(texts[1] != NULL && strcmp(texts[1], "rcpt 452") == 0);
		free_texts(texts, 2);
		CU_ASSERT(q_smtp_usable(c));
		close(fd);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(count_cmd(s, "DATA"), 1);
		srv_free(s);
	}
}

/* DATA refused: accepted recipients get its reply; usable; next one
 * starts with RSET. */
static void test_data_refused(void)
{
	int pipe;

	for (pipe = 0; pipe < 2; pipe++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "ok@example.net", "c550-b@example.net" };
		int codes[2], fd;
		char *texts[2];

		s->ehlo = pipe ? EHLO_PIPE : EHLO_PLAIN;
		s->data = "554 5.7.1 no thanks\r\n";
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 2, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "data_5xx");
		CU_ASSERT_EQUAL(e.code, 554);
		CU_ASSERT(e.permanent);
		CU_ASSERT_EQUAL(codes[0], 554);
		CU_ASSERT(texts[0] != NULL &&
			  strcmp(texts[0], "5.7.1 no thanks") == 0);
		CU_ASSERT_EQUAL(codes[1], 550);
		free_texts(texts, 2);
		CU_ASSERT(q_smtp_usable(c));
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
					    (off_t)sizeof(MSG) - 1, codes, texts,
					    &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "data_5xx");
		free_texts(texts, 1);
		close(fd);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(count_cmd(s, "RSET"), 1);
		CU_ASSERT_EQUAL(s->nmsgs, 0);
		srv_free(s);
	}
}

/* The data arrives unchanged (already dot-stuffed) plus the final dot;
 * a missing last CRLF is added; an empty message is "."; big messages
 * (sendfile in clear, 64 KB TLS writes) arrive intact. */
static void check_data(struct q_tls_ctx *ctx, const char *data, size_t len,
		       const char *want_tail)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net" };
	int codes[1], fd;
	char *texts[1];

	s->tls = ctx != NULL;
	o.tls = ctx;
	o.final_timeout = 5;
	o.data_timeout = 5;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	CU_ASSERT_EQUAL(q_smtp_tls_info(c) != NULL, ctx != NULL);
	fd = msg_fd(data, len);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)len, codes, texts, &e), 0);
	CU_ASSERT_EQUAL(codes[0], 250);
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(s->got.len, len + strlen(want_tail));
	if (s->got.len == len + strlen(want_tail)) {
		CU_ASSERT(memcmp(s->got.data, data, len) == 0);
		CU_ASSERT(memcmp(s->got.data + len, want_tail,
				 strlen(want_tail)) == 0);
	}
	srv_free(s);
}

static char *big_message(size_t len)
{
	char *m = malloc(len);
	size_t i, col = 0;

	for (i = 0; i < len; i++) {
		if (col == 0 && i % 7 == 0) {
			m[i] = '.';      /* stuffed lines ".." */
			col++;
			continue;
		}
		if (col >= 70 || i + 2 >= len) {
			if (i + 1 < len) {
				m[i++] = '\r';
				m[i] = '\n';
			} else {
				m[i] = '\n';
			}
			col = 0;
			continue;
		}
		m[i] = (char)('a' + (int)(i % 26));
		col++;
	}
	if (len >= 2) {
		m[len - 2] = '\r';
		m[len - 1] = '\n';
	}
	return m;
}

static void test_data_passthrough(void)
{
	static const char stuffed[] = "Subject: dots\r\n\r\n..one\r\n"
		"...two\r\n..\r\nend\r\n";
	static const char noeol[] = "Subject: x\r\n\r\nno line end";
	struct q_tls_ctx *ctx = NULL;
	const char *err;
	char *big;
	size_t sizes[] = { 65536 - 3, 65536, 65537, 300000 };
	size_t i;

	check_data(NULL, stuffed, sizeof(stuffed) - 1, ".\r\n");
	check_data(NULL, noeol, sizeof(noeol) - 1, "\r\n.\r\n");
	check_data(NULL, "", 0, ".\r\n");
	CU_ASSERT_FATAL(q_tls_ctx_new(NULL, &ctx, &err) == 0);
	check_data(ctx, stuffed, sizeof(stuffed) - 1, ".\r\n");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		big = big_message(sizes[i]);
		check_data(NULL, big, sizes[i], ".\r\n");
		check_data(ctx, big, sizes[i], ".\r\n");
		free(big);
	}
	/* a big message whose end is not CRLF, through sendfile */
	big = big_message(200000);
	big[199999] = 'x';
	check_data(NULL, big, 200000, "\r\n.\r\n");
	free(big);
	q_tls_ctx_free(&ctx);
}

/* The server closes mid-data: lost_connection, nothing decided. */
static void test_disconnect_mid_data(void)
{
	int tls;
	struct q_tls_ctx *ctx = NULL;
	const char *err;

	CU_ASSERT_FATAL(q_tls_ctx_new(NULL, &ctx, &err) == 0);
	for (tls = 0; tls < 2; tls++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "b@example.net", "c550-x@example.net" };
		int codes[2], fd;
		char *texts[2];
		size_t len = 2000000;
		char *big = big_message(len);

		s->tls = tls;
		o.tls = tls ? ctx : NULL;
		s->close_after_data = 100000;
		CU_ASSERT_FATAL(srv_start(s) == 0);
		CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
					    (unsigned)s->port, &c, &e) == 0);
		fd = msg_fd(big, len);
		CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 2, fd,
					    (off_t)len, codes, texts, &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "lost_connection");
		CU_ASSERT(strcmp(q_smtp_state(c), "data") == 0 ||
			  strcmp(q_smtp_state(c), "dot") == 0);
		CU_ASSERT_EQUAL(codes[0], 0);
		CU_ASSERT_EQUAL(codes[1], 550);   /* decided at RCPT */
		CU_ASSERT_PTR_NULL(texts[0]);
		free_texts(texts, 2);
		CU_ASSERT(!q_smtp_usable(c));
		CU_ASSERT_EQUAL(q_smtp_send(c, true, "a@example.org", r, 1, fd,
					    (off_t)len, codes, texts, &e), -1);
		CU_ASSERT_STRING_EQUAL(e.kind, "lost_connection");
		close(fd);
		free(big);
		q_smtp_close(&c);
		srv_stop(s);
		CU_ASSERT_EQUAL(s->nmsgs, 0);
		srv_free(s);
	}
	q_tls_ctx_free(&ctx);
}

/* A server that stalls, or trickles a reply that never ends: timeout at
 * command_timeout (1 s), not later. */
static void test_timeouts(void)
{
	int mode;

	/* the client's state as the server saw it while stalling */
	static const char *const want_state[] = { "mail", "", "", "data",
						  "rcpt", "dot", "rset" };

	for (mode = 0; mode < 7; mode++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "b@example.net" };
		int codes[1], fd, rc;
		char *texts[1];
		double t0, dt;

		if (mode == 0)
			s->stall_on = "MAIL";
		else if (mode == 1)
			s->trickle_on = "MAIL";
		else if (mode == 2)
			s->trickle_on = "EHLO";
		else if (mode == 3)
			s->stall_on = "DATA";
		else if (mode == 4)
			s->stall_on = "RCPT";
		else if (mode == 5)
			s->stall_after_data = true;
		else
			s->stall_on = "RSET";
		s->ehlo = mode == 3 || mode == 4 || mode == 6 ? EHLO_PLAIN :
			EHLO_PIPE;
		CU_ASSERT_FATAL(srv_start(s) == 0);
		t0 = now_s();
		rc = q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c, &e);
		if (mode == 2) {
			dt = now_s() - t0;
			CU_ASSERT_EQUAL(rc, -1);
			CU_ASSERT_STRING_EQUAL(e.kind, "timeout");
			CU_ASSERT(dt >= 0.9 && dt < 5.0);
		} else {
			CU_ASSERT_FATAL(rc == 0);
			s->watch = c;
			fd = msg_fd(MSG, sizeof(MSG) - 1);
			t0 = now_s();
			CU_ASSERT_EQUAL(q_smtp_send(c, mode == 6, "a@example.org",
						    r, 1, fd,
						    (off_t)sizeof(MSG) - 1,
						    codes, texts, &e), -1);
			dt = now_s() - t0;
			CU_ASSERT_STRING_EQUAL(e.kind, "timeout");
			CU_ASSERT(dt >= 0.9 && dt < 5.0);
			/* the state stays where the dialogue broke */
			CU_ASSERT_STRING_EQUAL(q_smtp_state(c),
					       mode == 1 ? "mail" :
					       want_state[mode]);
			CU_ASSERT(!q_smtp_usable(c));
			CU_ASSERT_EQUAL(codes[0], 0);
			free_texts(texts, 1);
			close(fd);
			t0 = now_s();
			q_smtp_close(&c);
			CU_ASSERT(now_s() - t0 < 0.5);  /* no QUIT wait */
		}
		srv_stop(s);
		CU_ASSERT_EQUAL(count_cmd(s, "QUIT"), 0);
		CU_ASSERT_STRING_EQUAL(s->stall_state, want_state[mode]);
		if (strcmp(s->stall_state, want_state[mode]) != 0)
			fprintf(stderr, "\nstall mode %d: state '%s'\n", mode,
				s->stall_state);
		srv_free(s);
	}
}

/* 421 ends the connection: nothing more is sent, not even QUIT. */
static void test_421(void)
{
	int mode;

	for (mode = 0; mode < 4; mode++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "b@example.net", "c421-x@example.net",
				    "d@example.net" };
		int codes[3], fd, rc;
		char *texts[3];

		s->ehlo = mode == 1 ? EHLO_PIPE : EHLO_PLAIN;
		if (mode == 0)
			s->mail = "421 4.3.2 shutting down\r\n";
		if (mode == 2)
			s->banner = "421 4.3.2 busy\r\n";
		if (mode == 3)
			s->data = "421 4.3.2 going away\r\n";
		CU_ASSERT_FATAL(srv_start(s) == 0);
		rc = q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c, &e);
		if (mode == 2) {
			CU_ASSERT_EQUAL(rc, -1);
			CU_ASSERT_STRING_EQUAL(e.kind, "banner");
			CU_ASSERT_EQUAL(e.code, 421);
		} else {
			CU_ASSERT_FATAL(rc == 0);
			fd = msg_fd(MSG, sizeof(MSG) - 1);
			CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org",
						    r, mode == 1 ? 3 : 1, fd,
						    (off_t)sizeof(MSG) - 1, codes,
						    texts, &e), -1);
			CU_ASSERT_EQUAL(e.code, 421);
			CU_ASSERT_STRING_EQUAL(e.kind, mode == 0 ? "mail_4xx" :
					       mode == 1 ? "rcpt_4xx" :
					       "data_4xx");
			CU_ASSERT(!q_smtp_usable(c));
			CU_ASSERT_STRING_EQUAL(q_smtp_state(c), mode == 0 ?
					       "mail" : mode == 1 ? "rcpt" :
					       "data");
			CU_ASSERT_EQUAL(codes[0], mode == 3 ? 421 : 0);
			if (mode == 1) {
				CU_ASSERT_EQUAL(codes[1], 0);
				CU_ASSERT_EQUAL(codes[2], 0);
			}
			free_texts(texts, mode == 1 ? 3 : 1);
			close(fd);
			q_smtp_close(&c);
		}
		srv_stop(s);
		CU_ASSERT_EQUAL(s->after_421, 0);
		CU_ASSERT_EQUAL(count_cmd(s, "QUIT"), 0);
		srv_free(s);
	}
}

/* A malformed reply is a protocol error and ends the connection. */
static void test_malformed(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net" };
	int codes[1], fd;
	char *texts[1];

	s->mail = "250-2.1.0 ok\r\n251 2.1.0 mixed\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "protocol");
	CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "mail");
	CU_ASSERT(strstr(e.text, "mixed") != NULL);
	CU_ASSERT(!q_smtp_usable(c));
	CU_ASSERT_EQUAL(codes[0], 0);
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "QUIT"), 0);
	srv_free(s);

	/* an address that would smuggle a command is refused locally */
	s = srv_new();
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	r[0] = "b@example.net>\r\nRCPT TO:<evil@example.net";
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "local");
	CU_ASSERT(q_smtp_usable(c));
	close(fd);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "RCPT"), 0);
	srv_free(s);
}

static void test_connect_errors(void)
{
	struct q_smtp_opts o = opts();
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	struct srv *s = srv_new();
	int port, lfd, fill[4], i;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	double t0, dt;

	/* the source address: bind_ip */
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.bind_ip = "127.0.0.2";
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	q_smtp_close(&c);
	o.bind_ip = "::1";     /* other family: ignored, as Exim does */
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_STRING_EQUAL(s->peer, "127.0.0.1");
	CU_ASSERT_EQUAL(s->nconn, 2);
	srv_free(s);
	s = srv_new();
	o.bind_ip = "127.0.0.2";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_STRING_EQUAL(s->peer, "127.0.0.2");
	srv_free(s);
	o.bind_ip = "127.0.0.1";

	/* connect_timeout: a listener whose accept queue is full drops
	 * further SYNs, so the connect never completes */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CU_ASSERT_FATAL(lfd >= 0 && bind(lfd, (struct sockaddr *)&a,
					 sizeof(a)) == 0 &&
			listen(lfd, 0) == 0 &&
			getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
	for (i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
				 SOCK_CLOEXEC, 0);
		connect(fill[i], (struct sockaddr *)&a, sizeof(a));
	}
	usleep(100000);
	o.connect_timeout = 1;
	t0 = now_s();
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", ntohs(a.sin_port), &c,
				    &e), -1);
	dt = now_s() - t0;
	CU_ASSERT_STRING_EQUAL(e.kind, "timeout_connect");
	CU_ASSERT(dt >= 0.9 && dt < 5.0);
	for (i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
	o.connect_timeout = 2;
	s = srv_new();

	/* a port nobody listens on (the server's, after it stopped) */
	CU_ASSERT_FATAL(srv_start(s) == 0);
	port = s->port;
	srv_stop(s);
	srv_free(s);
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)port, &c, &e),
			-1);
	CU_ASSERT_STRING_EQUAL(e.kind, "refused");
	CU_ASSERT_EQUAL(e.err, ECONNREFUSED);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_EQUAL(q_smtp_open(&o, "not-an-ip", 25, &c, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "connect");
	o.helo_name = "bad\r\nname";
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", 25, &c, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "local");
}

/* ---- TLS ---- */

static struct q_tls_ctx *tls_ctx(const char *ca, bool client_cert)
{
	struct q_tls_opts to = { .ca = ca };
	struct q_tls_ctx *ctx = NULL;
	const char *err = NULL;

	if (client_cert) {
		to.cert = cli_pem;
		to.key = cli_key;
	}
	if (q_tls_ctx_new(&to, &ctx, &err) < 0)
		fprintf(stderr, "q_tls_ctx_new: %s\n", err);
	return ctx;
}

static void test_starttls(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *ctx = tls_ctx(NULL, false);
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *info;
	int i, tls_ehlo = 0, clear_ehlo = 0;

	CU_ASSERT_FATAL(ctx != NULL);
	s->tls = true;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.tls = ctx;
	o.verify_name = "mx.test.example";
	CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e) == 0);
	info = q_smtp_tls_info(c);
	CU_ASSERT_FATAL(info != NULL);
	CU_ASSERT(strncmp(info, "TLSv1.3:TLS_", 12) == 0);
	CU_ASSERT_STRING_EQUAL(info, "TLSv1.3:TLS_AES_256_GCM_SHA384");
	CU_ASSERT(!q_smtp_tls_resumed(c));
	/* capabilities are those of the second EHLO */
	CU_ASSERT_EQUAL(q_smtp_exts(c), Q_EXT_PIPELINING | Q_EXT_SIZE |
			Q_EXT_ENHANCED);
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(s->handshakes, 1);
	CU_ASSERT_STRING_EQUAL(s->sni, "mx.test.example");
	for (i = 0; i < s->ncmd; i++)
		if (verb_is(s->cmd[i].line, "EHLO"))
			(*(s->cmd[i].tls ? &tls_ehlo : &clear_ehlo))++;
	CU_ASSERT_EQUAL(clear_ehlo, 1);
	CU_ASSERT_EQUAL(tls_ehlo, 1);
	i = find_cmd(s, "QUIT", 0);
	CU_ASSERT(i >= 0 && s->cmd[i].tls);
	srv_free(s);
	q_tls_ctx_free(&ctx);
}

/* Resumption: a second connection with the same context and cache key
 * resumes (TLS 1.3 tickets, and TLS 1.2); another key does not. */
static void test_resumption(void)
{
	int v;

	for (v = 0; v < 2; v++) {
		struct srv *s = srv_new();
		struct q_smtp_opts o = opts();
		struct q_tls_ctx *ctx = tls_ctx(NULL, false);
		struct q_smtp_conn *c = NULL;
		struct q_smtp_err e;
		const char *r[] = { "b@example.net" };
		int codes[1], fd, k;
		char *texts[1];

		CU_ASSERT_FATAL(ctx != NULL);
		s->tls = true;
		s->tls_max = v == 1 ? TLS1_2_VERSION : 0;
		CU_ASSERT_FATAL(srv_start(s) == 0);
		o.tls = ctx;
		o.cache_key = "mx.test.example:127.0.0.1:25";
		fd = msg_fd(MSG, sizeof(MSG) - 1);
		for (k = 0; k < 3; k++) {
			o.cache_key = k < 2 ? "mx.test.example:127.0.0.1:25" :
				"other:127.0.0.1:25";
			CU_ASSERT_FATAL(q_smtp_open(&o, "127.0.0.1",
						    (unsigned)s->port, &c, &e)
					== 0);
			CU_ASSERT(strncmp(q_smtp_tls_info(c),
					  v == 1 ? "TLSv1.2:" : "TLSv1.3:", 8)
				  == 0);
			CU_ASSERT_EQUAL(q_smtp_tls_resumed(c), k == 1);
			CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r,
						    1, fd,
						    (off_t)sizeof(MSG) - 1, codes,
						    texts, &e), 0);
			free_texts(texts, 1);
			q_smtp_close(&c);
		}
		close(fd);
		srv_stop(s);
		CU_ASSERT_EQUAL(s->handshakes, 3);
		CU_ASSERT_EQUAL(s->resumed, 1);
		CU_ASSERT_EQUAL(s->nmsgs, 3);
		srv_free(s);
		q_tls_ctx_free(&ctx);
	}
}

static int tls_open(struct srv *s, struct q_smtp_opts *o,
		    struct q_smtp_err *e)
{
	struct q_smtp_conn *c = NULL;
	int rc = q_smtp_open(o, "127.0.0.1", (unsigned)s->port, &c, e);

	if (rc == 0) {
		CU_ASSERT_PTR_NOT_NULL(q_smtp_tls_info(c));
		q_smtp_close(&c);
	} else {
		CU_ASSERT_PTR_NULL(c);
	}
	return rc;
}

static void test_verify(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *good = tls_ctx(ca_pem, false);
	struct q_tls_ctx *wrong = tls_ctx(ca2_pem, false);
	struct q_tls_ctx *none = tls_ctx(NULL, false);
	struct q_smtp_err e;

	CU_ASSERT_FATAL(good != NULL && wrong != NULL && none != NULL);
	s->tls = true;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.verify = true;
	o.cache_key = "k";

	o.tls = good;
	o.verify_name = "mx.test.example";
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), 0);
	/* resumed, still verified */
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), 0);
	/* no name: the IP is checked (the certificate has IP:127.0.0.1) */
	o.verify_name = NULL;
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), 0);

	/* wrong host name: even with a session for this key cached, the
	 * name is checked (the name is part of the cache key) */
	o.verify_name = "wrong.example";
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	CU_ASSERT(!e.tls_failed);
	CU_ASSERT(strstr(e.text, "hostname mismatch") != NULL);

	/* wrong CA */
	o.tls = wrong;
	o.verify_name = "mx.test.example";
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	CU_ASSERT(strstr(e.text, "local issuer") != NULL);

	/* no CA at all */
	o.tls = none;
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");

	/* without verify the same context is fine */
	o.verify = false;
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), 0);
	srv_stop(s);
	srv_free(s);
	q_tls_ctx_free(&good);
	q_tls_ctx_free(&wrong);
	q_tls_ctx_free(&none);
}

static void test_require_tls(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *ctx = tls_ctx(NULL, false);
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;

	/* not offered */
	s->ehlo = EHLO_PLAIN;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.tls = ctx;
	o.require_tls = true;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	CU_ASSERT(strstr(e.text, "STARTTLS") != NULL);
	/* avoid_tls with require_tls cannot be satisfied */
	o.avoid_tls = true;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	o.avoid_tls = false;
	/* not offered, not required: clear */
	o.require_tls = false;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), 0);
	CU_ASSERT_PTR_NULL(q_smtp_tls_info(c));
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "STARTTLS"), 0);
	srv_free(s);

	/* offered but refused */
	s = srv_new();
	s->starttls = "454 4.7.0 TLS not available\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.require_tls = true;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	CU_ASSERT_EQUAL(e.code, 454);
	o.require_tls = false;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), 0);
	CU_ASSERT_PTR_NULL(q_smtp_tls_info(c));
	CU_ASSERT(q_smtp_usable(c));
	q_smtp_close(&c);
	srv_stop(s);
	srv_free(s);
	q_tls_ctx_free(&ctx);
}

/* The handshake fails: opportunistic -> tls_failed (retry with
 * avoid_tls works), required -> tls_required. */
static void test_tls_failed(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *ctx = tls_ctx(NULL, false);
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;

	s->garbage_after_starttls = "this is not TLS\r\n";
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.tls = ctx;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_failed");
	CU_ASSERT(e.tls_failed);
	CU_ASSERT_PTR_NULL(c);
	o.require_tls = true;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), -1);
	CU_ASSERT_STRING_EQUAL(e.kind, "tls_required");
	CU_ASSERT(!e.tls_failed);
	o.require_tls = false;
	o.avoid_tls = true;
	CU_ASSERT_EQUAL(q_smtp_open(&o, "127.0.0.1", (unsigned)s->port, &c,
				    &e), 0);
	CU_ASSERT_PTR_NULL(q_smtp_tls_info(c));
	q_smtp_close(&c);
	srv_stop(s);
	CU_ASSERT_EQUAL(count_cmd(s, "STARTTLS"), 2);
	srv_free(s);
	q_tls_ctx_free(&ctx);
}

static void test_client_cert(void)
{
	struct srv *s = srv_new();
	struct q_smtp_opts o = opts();
	struct q_tls_ctx *ctx = tls_ctx(ca_pem, true);
	struct q_tls_opts bad = { .cert = cli_pem, .key = srv_key };
	struct q_tls_ctx *bctx = NULL;
	struct q_smtp_err e;
	const char *err = NULL;

	CU_ASSERT_FATAL(ctx != NULL);
	s->tls = true;
	s->want_client_cert = true;
	CU_ASSERT_FATAL(srv_start(s) == 0);
	o.tls = ctx;
	CU_ASSERT_EQUAL(tls_open(s, &o, &e), 0);
	srv_stop(s);
	CU_ASSERT_EQUAL(s->client_certs, 1);
	srv_free(s);
	q_tls_ctx_free(&ctx);
	/* a key that does not match the certificate */
	CU_ASSERT_EQUAL(q_tls_ctx_new(&bad, &bctx, &err), -1);
	CU_ASSERT_PTR_NULL(bctx);
	CU_ASSERT(err != NULL && strstr(err, "private key") != NULL);
	bad.cert = "/nonexistent/cert.pem";
	CU_ASSERT_EQUAL(q_tls_ctx_new(&bad, &bctx, &err), -1);
	CU_ASSERT(err != NULL && strstr(err, "/nonexistent/cert.pem") != NULL);
}

/* ------------------------------------------------------------------ */
/* against tests/smtpd (tests/smtpd.md): faults the thread server cannot
 * play. Each start works in its own directory under tdir. */

static int smtpd_open(struct ts_smtpd *s, const char *script,
		      struct q_smtp_conn **c_r)
{
	static int seq;
	char dir[600];
	struct q_smtp_opts o = opts();
	struct q_smtp_err e;

	*c_r = NULL;
	snprintf(dir, sizeof(dir), "%s/smtpd%d", tdir, ++seq);
	if (mkdir(dir, 0700) != 0 || ts_smtpd_start(s, dir, script, NULL) != 0)
		return -1;
	if (q_smtp_open(&o, "127.0.0.1", s->port, c_r, &e) != 0) {
		fprintf(stderr, "q_smtp_open: %s %s\n", e.kind, e.text);
		ts_smtpd_stop(s);
		return -1;
	}
	return 0;
}

/* MAIL refused and the server hangs up at once (Exim's "drop"), or
 * answers the next RCPT 421 (Postfix's "too many errors"): the refusal
 * is the outcome (permanent, 550), not the lost connection behind it;
 * with PIPELINING the connection is then unusable. */
static void test_mail_refused_close(void)
{
	static const char *const scripts[] = {
		"mail: 550 5.7.1 go away; close\n",
		"mail: 550 5.7.1 no\nrcpt: 421 4.7.0 too many errors; close\n",
	};

	for (int pipe = 0; pipe < 2; pipe++)
		for (size_t k = 0; k < 2; k++) {
			char script[256];
			struct ts_smtpd s;
			struct q_smtp_conn *c = NULL;
			struct q_smtp_err e;
			const char *r[] = { "b@example.net", "c@example.net" };
			int codes[2], fd, rc;
			char *texts[2];

			snprintf(script, sizeof(script), "%s%s", pipe ? "" :
				 "ext -PIPELINING\n", scripts[k]);
			CU_ASSERT_FATAL(smtpd_open(&s, script, &c) == 0);
			CU_ASSERT_EQUAL((q_smtp_exts(c) & Q_EXT_PIPELINING) != 0,
					pipe);
			fd = msg_fd(MSG, sizeof(MSG) - 1);
			rc = q_smtp_send(c, false, "bad@example.org", r, 2, fd,
					 (off_t)sizeof(MSG) - 1, codes, texts,
					 &e);
			CU_ASSERT_EQUAL(rc, -1);
			CU_ASSERT_STRING_EQUAL(e.kind, "mail_5xx");
			CU_ASSERT_EQUAL(e.code, 550);
			CU_ASSERT(e.permanent);
			CU_ASSERT(strstr(e.text, "5.7.1") != NULL);
			if (strcmp(e.kind, "mail_5xx") != 0)
				fprintf(stderr, "pipe %d script %zu: %s %d %s\n",
					pipe, k, e.kind, e.code, e.text);
			CU_ASSERT_EQUAL(codes[0], 0);
			CU_ASSERT_EQUAL(codes[1], 0);
			CU_ASSERT_PTR_NULL(texts[0]);
			CU_ASSERT_PTR_NULL(texts[1]);
			if (pipe) {
				CU_ASSERT(!q_smtp_usable(c));
			} else if (k == 1) {   /* no RCPT went out: still fine */
				CU_ASSERT(q_smtp_usable(c));
			}
			free_texts(texts, 2);
			close(fd);
			q_smtp_close(&c);
			ts_smtpd_stop(&s);
		}
}

/* A 421 in the same read as the reply to the final dot (a limit of
 * messages per connection): the message is delivered, the connection is
 * unusable, and the next transaction reports a connection closed between
 * messages (lost_connection, code 0, state "rset") - not a protocol
 * error. The same when the 421 comes right behind the EHLO reply. */
static void test_421_after_dot(void)
{
	struct ts_smtpd s;
	struct q_smtp_conn *c = NULL;
	struct q_smtp_err e;
	const char *r[] = { "b@example.net" };
	int codes[1], fd;
	char *texts[1];

	CU_ASSERT_FATAL(smtpd_open(&s, "dot#1: raw 250 2.0.0 ok\\r\\n"
				   "421 4.7.0 bye\\r\\n; close\n", &c) == 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e),
			0);
	CU_ASSERT_EQUAL(codes[0], 250);
	CU_ASSERT_STRING_EQUAL(e.kind, "");
	CU_ASSERT_EQUAL(q_smtp_msgs(c), 1);
	CU_ASSERT(!q_smtp_usable(c));
	CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "idle");
	free_texts(texts, 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, true, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e),
			-1);
	CU_ASSERT_STRING_EQUAL(e.kind, "lost_connection");
	CU_ASSERT_EQUAL(e.code, 0);
	CU_ASSERT(!e.permanent);
	CU_ASSERT(strstr(e.text, "421 4.7.0 bye") != NULL);
	CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "rset");
	CU_ASSERT_EQUAL(codes[0], 0);
	CU_ASSERT(!q_smtp_usable(c));
	free_texts(texts, 1);
	q_smtp_close(&c);
	ts_smtpd_stop(&s);
	CU_ASSERT_EQUAL(ts_smtpd_events(&s, "cmd", "RSET"), 0);
	CU_ASSERT_EQUAL(ts_smtpd_events(&s, "cmd", "QUIT"), 0);

	/* the same 421 found at the start of the first transaction */
	CU_ASSERT_FATAL(smtpd_open(&s, "ehlo: raw 250 mx.test\\r\\n"
				   "421 4.7.0 bye\\r\\n; close\n", &c) == 0);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e),
			-1);
	CU_ASSERT_STRING_EQUAL(e.kind, "lost_connection");
	CU_ASSERT_EQUAL(e.code, 0);
	CU_ASSERT(strstr(e.text, "421 4.7.0 bye") != NULL);
	CU_ASSERT_STRING_EQUAL(q_smtp_state(c), "mail");
	CU_ASSERT(!q_smtp_usable(c));
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	ts_smtpd_stop(&s);
	CU_ASSERT_EQUAL(ts_smtpd_events(&s, "cmd", "MAIL"), 0);

	/* anything else behind the final reply is still a protocol error */
	CU_ASSERT_FATAL(smtpd_open(&s, "dot#1: raw 250 2.0.0 ok\\r\\n"
				   "250 2.0.0 and once more\\r\\n\n", &c) == 0);
	fd = msg_fd(MSG, sizeof(MSG) - 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, false, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e),
			0);
	CU_ASSERT_EQUAL(codes[0], 250);
	free_texts(texts, 1);
	CU_ASSERT_EQUAL(q_smtp_send(c, true, "a@example.org", r, 1, fd,
				    (off_t)sizeof(MSG) - 1, codes, texts, &e),
			-1);
	CU_ASSERT_STRING_EQUAL(e.kind, "protocol");
	CU_ASSERT(!q_smtp_usable(c));
	free_texts(texts, 1);
	close(fd);
	q_smtp_close(&c);
	ts_smtpd_stop(&s);
}

/* ---- suite ---- */

static int suite_init(void)
{
	tdir = t_tmpdir();
	if (tdir == NULL)
		return -1;
	return make_certs();
}

void suite_smtp(void)
{
	CU_pSuite s = CU_add_suite("smtp", suite_init, NULL);

	CU_add_test(s, "EHLO capabilities, SIZE", test_ehlo_parse);
	CU_add_test(s, "HELO fallback, EHLO 4xx", test_helo_fallback);
	CU_add_test(s, "pipelined group in one read", test_pipelined);
	CU_add_test(s, "pipelined group in one TLS record", test_pipelined_tls);
	CU_add_test(s, "long pipelined group in pieces", test_long_group);
	CU_add_test(s, "no pipelining: one by one", test_no_pipelining);
	CU_add_test(s, "MAIL refused", test_mail_refused);
	CU_add_test(s, "RCPT 250/450/550 mixed", test_mixed_rcpt);
	CU_add_test(s, "every RCPT refused", test_all_rcpt_refused);
	CU_add_test(s, "DATA refused", test_data_refused);
	CU_add_test(s, "data passes unchanged plus the dot",
		    test_data_passthrough);
	CU_add_test(s, "disconnect mid-data", test_disconnect_mid_data);
	CU_add_test(s, "stall and trickle time out", test_timeouts);
	CU_add_test(s, "421 ends the connection", test_421);
	CU_add_test(s, "malformed reply, smuggled command", test_malformed);
	CU_add_test(s, "bind_ip, connect errors and timeout",
		    test_connect_errors);
	CU_add_test(s, "STARTTLS, info, EHLO again", test_starttls);
	CU_add_test(s, "TLS session resumption", test_resumption);
	CU_add_test(s, "certificate verification", test_verify);
	CU_add_test(s, "require_tls", test_require_tls);
	CU_add_test(s, "handshake failure", test_tls_failed);
	CU_add_test(s, "client certificate", test_client_cert);
	CU_add_test(s, "MAIL refused, then the server hangs up",
		    test_mail_refused_close);
	CU_add_test(s, "421 behind the final reply or the EHLO reply",
		    test_421_after_dot);
}
