/*
 * tests/test_tlsverify.c - suite_tlsverify: issue 5 "Security", the TLS
 * part and the spool part.
 *
 * Certificates: a CA made by this test with the openssl command (run
 * with posix_spawn through t_run, no shell): `openssl req -x509` for the
 * CA, `openssl req -new` + `openssl ca` for the servers' certificates,
 * because `openssl ca -startdate/-enddate` is how OpenSSL 3.0 makes a
 * certificate whose validity lies in the past or the future without
 * touching the clock (`x509 -req` has -days only; -not_before/-not_after
 * came with OpenSSL 3.4). The CA's configuration file is written by the
 * test with absolute paths, so nothing lands in the working directory.
 *
 * 1. Verification: bin/qrun with tls_verify_certificates = the test CA
 *    delivers to tests/smtpd over STARTTLS when the chain and the name
 *    are good (directly, or through an intermediate the server sends),
 *    and defers with the IP's retry kind "tls_required" - never falling
 *    back to clear text - when the name is wrong, the certificate has
 *    expired or is not yet valid, is self-signed, is signed by another
 *    CA, or the server leaves out the intermediate. The retry record's
 *    text names OpenSSL's reason, so a row cannot pass for another one.
 *
 * 2. TLS 1.2 as the minimum: tests/smtpd only speaks 1.2 and 1.3, and
 *    `openssl s_server` cannot play the server side of STARTTLS, so a
 *    small SMTP server runs in a thread of this test with an OpenSSL
 *    context limited to one version (TLS 1.0, 1.1, or 1.2 as the
 *    control), at security level 0 so that OpenSSL 3 agrees to speak
 *    the old versions at all. A plain OpenSSL client in the test proves
 *    that the server does complete a TLS 1.0/1.1 handshake; q_smtp_open
 *    (libq's client context) and bin/qrun must refuse it: "tls_failed"
 *    when TLS is opportunistic, "tls_required" when required.
 *
 * 3. The spool: qctl, qrun and qhints refuse a spool directory (or one
 *    of its subdirectories) writable by group or others, or owned by
 *    another user, with an error naming the path; the spool they create
 *    is 0700 with 0600 files even under umask 000 (checked after a
 *    submit and after a run that delivered, deferred and logged); and
 *    message ids given on the command line or to libq are checked before
 *    any path is built from them (../ and friends are refused, decoy
 *    files next to the spool are neither read nor changed).
 */
#include "config.h"
#include "tlib.h"
#include "tsrv.h"
#include "q/smtp.h"
#include "q/spool.h"
#include "q/util.h"

#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* ---- assertions that name the case ----------------------------------- */

static void check_at(bool ok, int line, const char *row, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void check_at(bool ok, int line, const char *row, const char *fmt, ...)
{
	char what[600], msg[800];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof(msg), "[%s] %s", row, what);
	if (!ok)
		fprintf(stderr, "tlsverify: FAILED %s\n", msg);
	CU_assertImplementation(ok, (unsigned)line, msg, __FILE__, "", CU_FALSE);
}
#define CHECK(row, cond, ...) check_at((cond), __LINE__, (row), __VA_ARGS__)

/* ---- a directory with a configuration -------------------------------- */

struct ctx {
	char dir[PATH_MAX];
	char conf[PATH_MAX + 16];
	char spool[PATH_MAX + 16];
	char hosts[PATH_MAX + 16];
};

/* One t_tmpdir for the suite (tlib keeps at most 256 per process);
 * each case works in a numbered directory inside it. */
static const char *base_dir(void)
{
	static const char *base;

	if (base == NULL)
		base = t_tmpdir();
	return base;
}

static int ctx_init(struct ctx *c, const char *spool_sub)
{
	static int seq;
	const char *d = base_dir();

	memset(c, 0, sizeof(*c));
	if (d == NULL)
		return -1;
	snprintf(c->dir, sizeof(c->dir), "%s/%d", d, ++seq);
	if (mkdir(c->dir, 0700) != 0) {
		perror(c->dir);
		return -1;
	}
	d = c->dir;
	snprintf(c->conf, sizeof(c->conf), "%s/qkit.conf", d);
	snprintf(c->spool, sizeof(c->spool), "%s/%s", d, spool_sub ? spool_sub : "spool");
	snprintf(c->hosts, sizeof(c->hosts), "%s/hosts", d);
	return t_write_file(c->hosts, "127.0.0.1 mx.test\n");
}

/* qkit.conf: the spool, 2 s timeouts, route * = mx.test:port, extra. */
static int ctx_conf(const struct ctx *c, unsigned port, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int ctx_conf(const struct ctx *c, unsigned port, const char *fmt, ...)
{
	char extra[2 * PATH_MAX], buf[5 * PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(extra, sizeof(extra), fmt, ap);
	va_end(ap);
	snprintf(buf, sizeof(buf),
		 "spool_directory = %s\nprimary_hostname = client.test\n"
		 "hosts_file = %s\nconnect_timeout = 2s\ncommand_timeout = 2s\n"
		 "data_timeout = 2s\nfinal_timeout = 2s\nroute * = mx.test:%u\n%s",
		 c->spool, c->hosts, port, extra);
	return t_write_file(c->conf, buf);
}

/* Run one of our programs with -C conf (NULL-ended arguments), stdin
 * from in (NULL: /dev/null). Its exit status, -1 if it could not run. */
static int run_prog(const char *prog, const struct ctx *c, const char *in,
		    struct t_out *o, ...)
{
	const char *argv[16];
	const char *a;
	va_list ap;
	int n = 0;

	memset(o, 0, sizeof(*o));
	argv[n++] = t_bin(prog);
	argv[n++] = "-C";
	argv[n++] = c->conf;
	va_start(ap, o);
	while ((a = va_arg(ap, const char *)) != NULL && n < 15)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	if (argv[0] == NULL || t_run(argv, in, o) != 0)
		return -1;
	return o->status;
}

static long jnum(const char *json, const char *name)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof(key), "\"%s\":", name);
	p = json ? strstr(json, key) : NULL;
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* `qctl submit -f a@sender.test rcpts...`: 0 and the id, or -1. */
static int submit(const struct ctx *c, const char *r1, const char *r2,
		  char id[Q_ID_LEN + 1])
{
	struct t_out o;
	int rc = run_prog("qctl", c, "Subject: tls test\n\nHello.\n", &o,
			  "submit", "-f", "a@sender.test", r1, r2, NULL);

	if (rc == 0 && o.out && strlen(o.out) >= Q_ID_LEN) {
		memcpy(id, o.out, Q_ID_LEN);
		id[Q_ID_LEN] = '\0';
	} else {
		fprintf(stderr, "qctl submit: %d %s\n", rc, o.err ? o.err : "");
		rc = -1;
	}
	t_out_free(&o);
	return rc;
}

static long queue_count(const struct ctx *c)
{
	struct t_out o;
	long n = -1;

	if (run_prog("qctl", c, NULL, &o, "list", "-c", NULL) == 0)
		n = strtol(o.out, NULL, 10);
	t_out_free(&o);
	return n;
}

/* `qctl retry --json`, malloc'd. */
static char *retry_json(const struct ctx *c)
{
	struct t_out o;
	char *s;

	run_prog("qctl", c, NULL, &o, "retry", "--json", NULL);
	s = strdup(o.out ? o.out : "");
	t_out_free(&o);
	return s;
}

/* kind and text of the record with this key ("" when none). */
static void retry_rec(const char *json, const char *key, char kind[64],
		      char text[512])
{
	char pat[600];
	const char *p, *end, *k;

	kind[0] = text[0] = '\0';
	snprintf(pat, sizeof(pat), "\"key\":\"%s\"", key);
	p = json ? strstr(json, pat) : NULL;
	if (p == NULL)
		return;
	end = strchr(p, '}');
	if ((k = strstr(p, "\"kind\":\"")) != NULL && (!end || k < end))
		snprintf(kind, 64, "%.*s", (int)strcspn(k + 8, "\""), k + 8);
	if ((k = strstr(p, "\"text\":\"")) != NULL && (!end || k < end))
		snprintf(text, 512, "%.*s", (int)strcspn(k + 8, "\""), k + 8);
}

/* ---- tests/smtpd ----------------------------------------------------- */

static int srv_start(struct ts_smtpd *s, const struct ctx *c, const char *script,
		     const char *const extra[])
{
	return ts_smtpd_start(s, c->dir, script, extra);
}

/* ====================================================================== */
/* the test CA (made once per run) */

static char g_dir[PATH_MAX];

/* g_dir/<name> */
static const char *pki(const char *name)
{
	static char buf[8][PATH_MAX + 64];
	static int k;

	k = (k + 1) % 8;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", g_dir, name);
	return buf[k];
}

static int openssl(const char *const argv[])
{
	struct t_out o;
	int rc;

	if (t_run(argv, NULL, &o) != 0)
		return -1;
	rc = o.status == 0 ? 0 : -1;
	if (rc != 0)
		fprintf(stderr, "openssl %s failed (%d): %s\n", argv[1], o.status,
			o.err ? o.err : "");
	t_out_free(&o);
	return rc;
}

#define EC "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"

/* A self-signed certificate: a CA (v3_ca) or a server (CN and SAN). */
static int make_selfsigned(const char *name, const char *cn, bool ca)
{
	char crt[64], key[64], subj[128], san[128];
	const char *argv[32];
	int n = 0;

	snprintf(crt, sizeof(crt), "%s.crt", name);
	snprintf(key, sizeof(key), "%s.key", name);
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	snprintf(san, sizeof(san), "subjectAltName=DNS:%s", cn);
	const char *const head[] = {"openssl", "req", "-config", pki("ca.cnf"),
				    "-x509", EC, "-days", "3", "-subj", subj,
				    "-extensions", ca ? "v3_ca" : "leaf",
				    "-keyout", pki(key), "-out", pki(crt)};
	for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
		argv[n++] = head[i];
	if (!ca) {
		argv[n++] = "-addext";
		argv[n++] = san;
	}
	argv[n] = NULL;
	return openssl(argv);
}

/* A key and a certificate for cn, signed by issuer with this validity
 * (YYYYMMDDHHMMSSZ), with the extensions of section ext. */
static int make_signed(const char *name, const char *cn, const char *issuer,
		       const char *from, const char *until, const char *ext)
{
	char crt[64], key[64], csr[64], icrt[64], ikey[64], subj[128], san[128];

	snprintf(crt, sizeof(crt), "%s.crt", name);
	snprintf(key, sizeof(key), "%s.key", name);
	snprintf(csr, sizeof(csr), "%s.csr", name);
	snprintf(icrt, sizeof(icrt), "%s.crt", issuer);
	snprintf(ikey, sizeof(ikey), "%s.key", issuer);
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	snprintf(san, sizeof(san), "subjectAltName=DNS:%s", cn);
	const char *const head[] = {"openssl", "req", "-config", pki("ca.cnf"),
				    "-new", EC, "-subj", subj, "-keyout", pki(key),
				    "-out", pki(csr)};
	const char *argv[32];
	int n = 0;

	for (size_t i = 0; i < sizeof(head) / sizeof(head[0]); i++)
		argv[n++] = head[i];
	if (strcmp(ext, "leaf") == 0) {       /* copied by copy_extensions */
		argv[n++] = "-addext";
		argv[n++] = san;
	}
	argv[n] = NULL;
	if (openssl(argv) != 0)
		return -1;
	const char *const ca[] = {
		"openssl", "ca", "-batch", "-config", pki("ca.cnf"), "-cert", pki(icrt),
		"-keyfile", pki(ikey), "-in", pki(csr), "-out", pki(crt),
		"-startdate", from, "-enddate", until, "-extensions", ext,
		"-notext", NULL};
	return openssl(ca);
}

/* cat a b > out */
static int concat(const char *a, const char *b, const char *out)
{
	char *x = t_read_file(pki(a), NULL), *y = t_read_file(pki(b), NULL);
	int rc = -1;

	if (x && y) {
		size_t lx = strlen(x), ly = strlen(y);
		char *z = malloc(lx + ly + 1);

		if (z != NULL) {
			memcpy(z, x, lx);
			memcpy(z + lx, y, ly + 1);
			rc = t_write_file(pki(out), z);
			free(z);
		}
	}
	free(x);
	free(y);
	return rc;
}

static int make_pki(void)
{
	static int made;
	char cnf[4096 + 3 * PATH_MAX];

	if (made != 0)
		return made == 1 ? 0 : -1;
	made = -1;
	const char *b = base_dir();
	if (b == NULL)
		return -1;
	snprintf(g_dir, sizeof(g_dir), "%s/pki", b);
	if (mkdir(g_dir, 0700) != 0) {
		perror(g_dir);
		return -1;
	}
	const char *d = g_dir;
	snprintf(cnf, sizeof(cnf),
		 "[req]\n"
		 "distinguished_name = dn\n"
		 "prompt = no\n"
		 "[dn]\n"
		 "CN = unused\n"
		 "[v3_ca]\n"
		 "basicConstraints = critical,CA:TRUE\n"
		 "keyUsage = critical,keyCertSign,cRLSign\n"
		 "subjectKeyIdentifier = hash\n"
		 "[inter]\n"
		 "basicConstraints = critical,CA:TRUE,pathlen:0\n"
		 "keyUsage = critical,keyCertSign,cRLSign\n"
		 "subjectKeyIdentifier = hash\n"
		 "authorityKeyIdentifier = keyid\n"
		 "[leaf]\n"
		 "basicConstraints = CA:FALSE\n"
		 "keyUsage = critical,digitalSignature\n"
		 "extendedKeyUsage = serverAuth\n"
		 "[ca]\n"
		 "default_ca = tca\n"
		 "[tca]\n"
		 "database = %s/index.txt\n"
		 "new_certs_dir = %s\n"
		 "serial = %s/serial\n"
		 "default_md = sha256\n"
		 "policy = pol\n"
		 "unique_subject = no\n"
		 "copy_extensions = copy\n"
		 "email_in_dn = no\n"
		 "[pol]\n"
		 "commonName = supplied\n", d, d, d);
	if (t_write_file(pki("ca.cnf"), cnf) != 0 ||
	    t_write_file(pki("index.txt"), "") != 0 ||
	    t_write_file(pki("serial"), "1000\n") != 0)
		return -1;
	/* validity: from yesterday to 30 days on for the good ones (as the
	   clock says), January 2020 (expired), 2099 (not yet valid) */
	char from[20], until[20];
	time_t now = time(NULL), t0 = now - 86400, t1 = now + 30 * 86400;
	struct tm tm;
	strftime(from, sizeof(from), "%Y%m%d%H%M%SZ", gmtime_r(&t0, &tm));
	strftime(until, sizeof(until), "%Y%m%d%H%M%SZ", gmtime_r(&t1, &tm));
	if (make_selfsigned("ca", "qkit test CA", true) != 0 ||
	    make_selfsigned("other-ca", "qkit unrelated CA", true) != 0 ||
	    make_signed("good", "mx.test", "ca", from, until, "leaf") != 0 ||
	    make_signed("wrongname", "other.test", "ca", from, until, "leaf") != 0 ||
	    make_signed("expired", "mx.test", "ca", "20200101000000Z",
			"20200102000000Z", "leaf") != 0 ||
	    make_signed("future", "mx.test", "ca", "20990101000000Z",
			"20990201000000Z", "leaf") != 0 ||
	    make_signed("inter", "qkit test intermediate", "ca",
			from, until, "inter") != 0 ||
	    make_signed("chained", "mx.test", "inter", from, until, "leaf") != 0 ||
	    make_signed("foreign", "mx.test", "other-ca", from, until, "leaf") != 0 ||
	    make_selfsigned("self", "mx.test", false) != 0 ||
	    concat("chained.crt", "inter.crt", "chain.pem") != 0)
		return -1;
	made = 1;
	return 0;
}

/* ====================================================================== */
/* 1. verification through qrun */

struct vcase {
	const char *name;
	const char *crt, *key;   /* the server's (names in the PKI dir) */
	const char *tls_max;     /* smtpd -T, or NULL */
	const char *extra;       /* more configuration */
	bool ok;                 /* delivered over verified TLS */
	const char *why;         /* deferred: in the retry text */
	const char *why2;        /* ... or this (older OpenSSL wording) */
};

static const struct vcase vcases[] = {
	{"good chain, right name", "good.crt", "good.key", NULL, NULL,
	 true, NULL, NULL},
	{"good chain, TLS 1.2", "good.crt", "good.key", "1.2", NULL,
	 true, NULL, NULL},
	{"through an intermediate the server sends", "chain.pem", "chained.key",
	 NULL, NULL, true, NULL, NULL},
	{"intermediate not sent", "chained.crt", "chained.key", NULL, NULL,
	 false, "unable to get local issuer certificate", NULL},
	{"wrong name", "wrongname.crt", "wrongname.key", NULL, NULL,
	 false, "hostname mismatch", NULL},
	{"expired", "expired.crt", "expired.key", NULL, NULL,
	 false, "certificate has expired", NULL},
	{"expired, TLS 1.2", "expired.crt", "expired.key", "1.2", NULL,
	 false, "certificate has expired", NULL},
	{"not yet valid", "future.crt", "future.key", NULL, NULL,
	 false, "certificate is not yet valid", NULL},
	{"self-signed", "self.crt", "self.key", NULL, NULL,
	 false, "self-signed certificate", "self signed certificate"},
	{"signed by another CA", "foreign.crt", "foreign.key", NULL, NULL,
	 false, "unable to get local issuer certificate", NULL},
	/* tls_verify_hosts limits verification to the hosts it names:
	   another host gets TLS without the checks (Exim's meaning) */
	{"expired, but mx.test not in tls_verify_hosts", "expired.crt",
	 "expired.key", NULL, "tls_verify_hosts = other.test\n",
	 true, NULL, NULL},
};

static void run_vcase(const struct vcase *v)
{
	struct ctx c;
	struct ts_smtpd s;
	struct t_out o;
	char id[Q_ID_LEN + 1], key[128], kind[64], text[512];
	const char *row = v->name;
	const char *extra[] = {"-c", pki(v->crt), "-k", pki(v->key),
			       v->tls_max ? "-T" : NULL, v->tls_max, NULL};

	CU_ASSERT_FATAL(ctx_init(&c, NULL) == 0);
	if (srv_start(&s, &c, NULL, extra) != 0) {
		CHECK(row, false, "tests/smtpd did not start");
		return;
	}
	CU_ASSERT_FATAL(ctx_conf(&c, s.port, "tls_verify_certificates = %s\n%s",
				 pki("ca.crt"), v->extra ? v->extra : "") == 0);
	CU_ASSERT_FATAL(submit(&c, "x@d.test", "y@d.test", id) == 0);
	int rc = run_prog("qrun", &c, NULL, &o, "--json", NULL);
	CHECK(row, rc == 0, "qrun exit status %d: %s", rc, o.err ? o.err : "");
	long delivered = jnum(o.out, "delivered"), tls = jnum(o.out, "tls");
	t_out_free(&o);
	char *rj = retry_json(&c);
	snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port);
	retry_rec(rj, key, kind, text);
	long queued = queue_count(&c);
	ts_smtpd_stop(&s);

	if (v->ok) {
		CHECK(row, delivered == 2 && tls == 1,
		      "delivered %ld with %ld TLS connections, expected 2 and 1",
		      delivered, tls);
		CHECK(row, queued == 0, "%ld left on the queue", queued);
		CHECK(row, kind[0] == '\0', "a retry record: %s %s", kind, text);
		CHECK(row, ts_smtpd_stat(&s, "msgs") == 1 && ts_smtpd_stat(&s, "tls") == 1,
		      "server: %s", s.stats);
		if (v->tls_max != NULL)
			CHECK(row, ts_smtpd_events(&s, "tls", "version=TLSv1.2") == 1,
			      "not TLS 1.2");
		/* the message went inside TLS: its MAIL came after the
		   handshake (the record has no MAIL before "tls") */
		CHECK(row, ts_smtpd_events(&s, "cmd", "MAIL FROM") == 1, "MAIL count");
	} else {
		CHECK(row, delivered == 0, "delivered %ld", delivered);
		CHECK(row, queued == 1, "%ld on the queue, expected 1", queued);
		CHECK(row, strcmp(kind, "tls_required") == 0,
		      "retry kind '%s', expected tls_required (%.300s)", kind, rj);
		CHECK(row, strstr(text, v->why) != NULL ||
		      (v->why2 && strstr(text, v->why2) != NULL),
		      "retry text '%s' does not say '%s'", text, v->why);
		CHECK(row, ts_smtpd_stat(&s, "msgs") == 0, "server: %s", s.stats);
		/* never fell back to clear text */
		CHECK(row, ts_smtpd_events(&s, "cmd", "MAIL FROM") == 0,
		      "MAIL sent although the certificate failed");
		CHECK(row, ts_smtpd_stat(&s, "tls") == 0 || v->why == NULL,
		      "server counted a completed handshake: %s", s.stats);
	}
	free(rj);
}

static void test_verify(void)
{
	CU_ASSERT_FATAL(make_pki() == 0);
	for (size_t i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++)
		run_vcase(&vcases[i]);
}

/* ====================================================================== */
/* 2. an old-TLS server in a thread */

struct oldsrv {
	SSL_CTX *ctx;
	int lfd;
	unsigned port;
	int stop[2];
	pthread_t th;
	/* results (read after oldsrv_stop) */
	int conns, handshakes, failures, msgs;
	char version[32];        /* of the last completed handshake */
	char error[256];         /* OpenSSL's reason for the last failure */
};

struct oconn {
	struct oldsrv *s;
	int fd;
	SSL *ssl;
	char buf[4096];
	size_t pos, len;
};

static int oc_getc(struct oconn *k)
{
	if (k->pos == k->len) {
		struct pollfd p[2] = {{.fd = k->fd, .events = POLLIN},
				      {.fd = k->s->stop[0], .events = POLLIN}};
		int r;

		if (k->ssl == NULL || SSL_pending(k->ssl) == 0) {
			/* every wait is bounded: 10 s */
			r = poll(p, 2, 10000);
			if (r <= 0 || p[1].revents != 0)
				return -1;
		}
		r = k->ssl ? SSL_read(k->ssl, k->buf, sizeof(k->buf)) :
			     (int)recv(k->fd, k->buf, sizeof(k->buf), 0);
		if (r <= 0)
			return -1;
		k->pos = 0;
		k->len = (size_t)r;
	}
	return (unsigned char)k->buf[k->pos++];
}

static int oc_line(struct oconn *k, char *line, size_t size)
{
	size_t n = 0;
	int ch;

	while ((ch = oc_getc(k)) >= 0) {
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

static void oc_send(struct oconn *k, const char *s)
{
	if (k->ssl)
		SSL_write(k->ssl, s, (int)strlen(s));
	else
		send(k->fd, s, strlen(s), MSG_NOSIGNAL);
}

/* One SMTP session: STARTTLS offered until TLS is up; a sink after. */
static void oc_session(struct oldsrv *s, int fd)
{
	struct oconn k = {.s = s, .fd = fd};
	char line[1024];
	bool data = false;

	oc_send(&k, "220 old.test ESMTP\r\n");
	while (oc_line(&k, line, sizeof(line)) == 0) {
		if (data) {
			if (strcmp(line, ".") == 0) {
				data = false;
				s->msgs++;
				oc_send(&k, "250 ok\r\n");
			}
		} else if (strncasecmp(line, "EHLO", 4) == 0) {
			oc_send(&k, k.ssl ? "250 old.test\r\n" :
				"250-old.test\r\n250 STARTTLS\r\n");
		} else if (strncasecmp(line, "STARTTLS", 8) == 0 && k.ssl == NULL) {
			oc_send(&k, "220 go\r\n");
			k.ssl = SSL_new(s->ctx);
			if (k.ssl == NULL)
				break;
			SSL_set_fd(k.ssl, fd);
			ERR_clear_error();
			if (SSL_accept(k.ssl) != 1) {
				unsigned long e = ERR_get_error();

				s->failures++;
				snprintf(s->error, sizeof(s->error), "%s",
					 e ? ERR_reason_error_string(e) : "eof");
				ERR_clear_error();
				break;
			}
			s->handshakes++;
			snprintf(s->version, sizeof(s->version), "%s",
				 SSL_get_version(k.ssl));
			k.pos = k.len = 0;
		} else if (strncasecmp(line, "DATA", 4) == 0) {
			data = true;
			oc_send(&k, "354 go\r\n");
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			oc_send(&k, "221 bye\r\n");
			break;
		} else {
			oc_send(&k, "250 ok\r\n");
		}
	}
	if (k.ssl) {
		if (SSL_is_init_finished(k.ssl))
			SSL_shutdown(k.ssl);
		SSL_free(k.ssl);
	}
	ERR_clear_error();
	close(fd);
}

static void *oldsrv_main(void *arg)
{
	struct oldsrv *s = arg;

	/* bounded: at most 100 connections, and a stop pipe */
	for (int i = 0; i < 100; i++) {
		struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN},
				      {.fd = s->stop[0], .events = POLLIN}};

		if (poll(p, 2, 30000) <= 0 || p[1].revents != 0)
			break;
		int fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		s->conns++;
		oc_session(s, fd);
	}
	return NULL;
}

/* A server that speaks exactly TLS version v (TLS1_VERSION...). */
static int oldsrv_start(struct oldsrv *s, int v)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sa);

	memset(s, 0, sizeof(*s));
	s->lfd = -1;
	s->stop[0] = s->stop[1] = -1;
	s->ctx = SSL_CTX_new(TLS_server_method());
	if (s->ctx == NULL)
		return -1;
	/* OpenSSL 3 speaks TLS 1.0/1.1 at security level 0 only */
	SSL_CTX_set_security_level(s->ctx, 0);
	if (SSL_CTX_set_min_proto_version(s->ctx, v) != 1 ||
	    SSL_CTX_set_max_proto_version(s->ctx, v) != 1 ||
	    SSL_CTX_set_cipher_list(s->ctx, "ALL:@SECLEVEL=0") != 1 ||
	    SSL_CTX_use_certificate_chain_file(s->ctx, pki("good.crt")) != 1 ||
	    SSL_CTX_use_PrivateKey_file(s->ctx, pki("good.key"), SSL_FILETYPE_PEM) != 1)
		return -1;
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(s->lfd, 16) < 0 ||
	    getsockname(s->lfd, (struct sockaddr *)&sa, &sl) < 0 ||
	    pipe(s->stop) < 0)
		return -1;
	s->port = ntohs(sa.sin_port);
	if (pthread_create(&s->th, NULL, oldsrv_main, s) != 0) {
		s->port = 0;
		return -1;
	}
	return 0;
}

static void oldsrv_stop(struct oldsrv *s)
{
	if (s->port != 0) {
		if (write(s->stop[1], "x", 1) != 1)
			perror("oldsrv stop");
		pthread_join(s->th, NULL);
	}
	if (s->lfd >= 0)
		close(s->lfd);
	for (int i = 0; i < 2; i++)
		if (s->stop[i] >= 0)
			close(s->stop[i]);
	SSL_CTX_free(s->ctx);
	s->ctx = NULL;
	s->port = 0;
}

/* The control client: plain OpenSSL willing to speak any version at
 * security level 0. EHLO, STARTTLS, the handshake, QUIT. The version
 * negotiated ("TLSv1.1"), or "" when the handshake failed. */
static void any_client(unsigned port, char *version, size_t size)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = 10};
	char buf[1024];
	size_t got = 0;

	version[0] = '\0';
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (ctx == NULL || fd < 0)
		goto out;
	SSL_CTX_set_security_level(ctx, 0);
	SSL_CTX_set_min_proto_version(ctx, 0);
	SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0");
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	/* banner, EHLO reply ("250 STARTTLS" last), 220 to STARTTLS:
	   read until three final lines have arrived */
	static const char *const cmds[] = {NULL, "EHLO any.test\r\n", "STARTTLS\r\n"};
	for (int step = 0; step < 3; step++) {
		if (cmds[step] && send(fd, cmds[step], strlen(cmds[step]),
				       MSG_NOSIGNAL) < 0)
			goto out;
		for (;;) {
			char *p = buf, *nl;
			bool final = false;

			buf[got] = '\0';
			while ((nl = strchr(p, '\n')) != NULL) {
				if (nl - p >= 4 && p[3] == ' ')
					final = true;
				p = nl + 1;
				if (final)
					break;
			}
			if (final) {
				memmove(buf, p, got - (size_t)(p - buf));
				got -= (size_t)(p - buf);
				break;
			}
			ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
			if (r <= 0)
				goto out;
			got += (size_t)r;
		}
	}
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		goto out;
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) == 1) {
		snprintf(version, size, "%s", SSL_get_version(ssl));
		SSL_write(ssl, "QUIT\r\n", 6);
		SSL_read(ssl, buf, sizeof(buf));
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
out:
	ERR_clear_error();
	if (fd >= 0)
		close(fd);
	SSL_CTX_free(ctx);
}

static const struct {
	const char *name;
	int version;
	const char *vname;      /* SSL_get_version's */
	bool ok;
} old_versions[] = {
	{"TLS 1.2 only (control)", TLS1_2_VERSION, "TLSv1.2", true},
	{"TLS 1.1 only", TLS1_1_VERSION, "TLSv1.1", false},
	{"TLS 1.0 only", TLS1_VERSION, "TLSv1", false},
};

/* q_smtp_open straight against the thread server. */
static void old_smtp_open(const char *row, unsigned port, bool ok)
{
	struct q_tls_ctx *tctx = NULL;
	struct q_tls_opts to = {.ca = NULL};
	const char *err = NULL;

	CU_ASSERT_FATAL(q_tls_ctx_new(&to, &tctx, &err) == 0);
	for (int require = 0; require < 2; require++) {
		struct q_smtp_opts o = {
			.helo_name = "client.test",
			.connect_timeout = 2, .command_timeout = 2,
			.data_timeout = 2, .final_timeout = 2,
			.tls = tctx, .require_tls = require != 0,
			.verify_name = "mx.test", .cache_key = "old:127.0.0.1",
			.size_addition = -1,
		};
		struct q_smtp_conn *conn = NULL;
		struct q_smtp_err e;

		memset(&e, 0, sizeof(e));
		int rc = q_smtp_open(&o, "127.0.0.1", port, &conn, &e);
		if (ok) {
			CHECK(row, rc == 0, "q_smtp_open: %s %s", e.kind, e.text);
			if (rc == 0) {
				const char *info = q_smtp_tls_info(conn);
				CHECK(row, info != NULL && strncmp(info, "TLSv1.2", 7) == 0,
				      "TLS info %s", info ? info : "(none)");
				q_smtp_close(&conn);
			}
		} else {
			CHECK(row, rc == -1 && conn == NULL, "q_smtp_open returned %d", rc);
			CHECK(row, strcmp(e.kind, require ? "tls_required" : "tls_failed") == 0,
			      "require_tls=%d: kind '%s' (%s)", require, e.kind, e.text);
			CHECK(row, require || e.tls_failed, "tls_failed flag not set");
			CHECK(row, strstr(e.text, "protocol") != NULL,
			      "the error does not name the protocol version: %s", e.text);
			if (conn)
				q_smtp_close(&conn);
		}
	}
	q_tls_ctx_free(&tctx);
}

static void test_min_version(void)
{
	CU_ASSERT_FATAL(make_pki() == 0);
	signal(SIGPIPE, SIG_IGN);     /* (tlib does so too) */
	for (size_t i = 0; i < sizeof(old_versions) / sizeof(old_versions[0]); i++) {
		const char *row = old_versions[i].name;
		struct oldsrv s;
		char v[32];

		if (oldsrv_start(&s, old_versions[i].version) != 0) {
			CHECK(row, false, "cannot start the server thread");
			oldsrv_stop(&s);
			continue;
		}
		/* the server really speaks this version */
		any_client(s.port, v, sizeof(v));
		CHECK(row, strcmp(v, old_versions[i].vname) == 0,
		      "control client negotiated '%s', expected %s", v,
		      old_versions[i].vname);
		int before = s.handshakes;

		/* libq's client context */
		old_smtp_open(row, s.port, old_versions[i].ok);

		/* bin/qrun, TLS required */
		struct ctx c;
		struct t_out o;
		char id[Q_ID_LEN + 1], key[128], kind[64], text[512];

		CU_ASSERT_FATAL(ctx_init(&c, NULL) == 0);
		CU_ASSERT_FATAL(ctx_conf(&c, s.port, "hosts_require_tls = *\n") == 0);
		CU_ASSERT_FATAL(submit(&c, "x@d.test", "y@d.test", id) == 0);
		int rc = run_prog("qrun", &c, NULL, &o, "--json", NULL);
		CHECK(row, rc == 0, "qrun exit %d: %s", rc, o.err ? o.err : "");
		long delivered = jnum(o.out, "delivered");
		t_out_free(&o);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port);
		retry_rec(rj, key, kind, text);
		free(rj);
		long queued = queue_count(&c);
		oldsrv_stop(&s);

		if (old_versions[i].ok) {
			CHECK(row, delivered == 2 && queued == 0 && s.msgs == 1,
			      "delivered %ld, queued %ld, server took %d", delivered,
			      queued, s.msgs);
			/* control, q_smtp_open twice, qrun */
			CHECK(row, s.handshakes == before + 3,
			      "%d handshakes after the control", s.handshakes - before);
		} else {
			CHECK(row, delivered == 0 && queued == 1 && s.msgs == 0,
			      "delivered %ld, queued %ld, server took %d", delivered,
			      queued, s.msgs);
			CHECK(row, strcmp(kind, "tls_required") == 0 &&
			      strstr(text, "protocol") != NULL,
			      "retry record '%s' '%s'", kind, text);
			/* only the control client completed a handshake */
			CHECK(row, s.handshakes == 1, "%d handshakes", s.handshakes);
			CHECK(row, s.failures >= 3, "%d failed handshakes", s.failures);
			/* the server saw a client that does not offer it */
			CHECK(row, strstr(s.error, "unsupported protocol") != NULL,
			      "server-side error '%s'", s.error);
		}
	}
}

/* ====================================================================== */
/* 3. the spool */

/* Modes of everything under a tree. */
struct walk {
	int dirs, files, bad;
	char first_bad[PATH_MAX + 32];
	uid_t uid;
};
static struct walk *g_walk;

static int walk_cb(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)f;
	mode_t m = st->st_mode & 07777;
	bool ok;

	if (type == FTW_D || type == FTW_DP) {
		g_walk->dirs++;
		ok = m == 0700;
	} else if (type == FTW_F) {
		g_walk->files++;
		ok = m == 0600;
	} else {
		ok = false;         /* symlinks, unreadable: not expected */
	}
	ok = ok && st->st_uid == g_walk->uid;
	if (!ok && g_walk->bad++ == 0)
		snprintf(g_walk->first_bad, sizeof(g_walk->first_bad), "%04o %s",
			 (unsigned)m, path);
	return 0;
}

static void walk_modes(const char *dir, struct walk *w)
{
	memset(w, 0, sizeof(*w));
	w->uid = geteuid();
	g_walk = w;
	if (nftw(dir, walk_cb, 16, FTW_PHYS) != 0)
		w->bad++;
	g_walk = NULL;
}

static void test_spool_modes(void)
{
	struct ctx c;
	struct ts_smtpd s;
	struct t_out o;
	struct walk w;
	char id[Q_ID_LEN + 1], parent[PATH_MAX + 16];
	struct stat st;
	const char *row = "modes";

	/* a spool two levels below an existing directory: qctl makes both */
	CU_ASSERT_FATAL(ctx_init(&c, "var/spool") == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "rcpt 2: 451 4.3.0 later\n", NULL) == 0);
	CU_ASSERT_FATAL(ctx_conf(&c, s.port, "%s", "") == 0);
	mode_t old = umask(0);     /* inherited by the programs run below */

	CU_ASSERT(submit(&c, "x@d.test", "later@d.test", id) == 0);
	walk_modes(c.spool, &w);
	CHECK(row, w.bad == 0 && w.dirs >= 3 && w.files >= 3,
	      "after a submit under umask 000: %d dirs, %d files, %d wrong, "
	      "first %s", w.dirs, w.files, w.bad, w.first_bad);
	/* the parent qctl made is not writable by others either */
	snprintf(parent, sizeof(parent), "%s/var", c.dir);
	CHECK(row, stat(parent, &st) == 0 && (st.st_mode & 022) == 0,
	      "parent %s mode %04o", parent, (unsigned)(st.st_mode & 07777));

	/* a run that delivers one recipient and defers the other: journal,
	   msglog, retry and wait records, the main log */
	int rc = run_prog("qrun", &c, NULL, &o, "--json", NULL);
	CHECK(row, rc == 0 && jnum(o.out, "delivered") == 1 &&
	      jnum(o.out, "deferred") == 1, "qrun %d: %s%s", rc,
	      o.out ? o.out : "", o.err ? o.err : "");
	t_out_free(&o);
	CU_ASSERT(submit(&c, "z@d.test", "w@d.test", id) == 0);
	run_prog("qctl", &c, NULL, &o, "freeze", id, NULL);
	t_out_free(&o);
	run_prog("qhints", &c, NULL, &o, "tidy", NULL);
	t_out_free(&o);
	umask(old);
	ts_smtpd_stop(&s);
	walk_modes(c.spool, &w);
	CHECK(row, w.bad == 0 && w.dirs >= 5 && w.files >= 6,
	      "after a run under umask 000: %d dirs, %d files, %d wrong, "
	      "first %s", w.dirs, w.files, w.bad, w.first_bad);
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/msglog", c.spool);
	CHECK(row, stat(path, &st) == 0, "no msglog directory");
	snprintf(path, sizeof(path), "%s/db", c.spool);
	CHECK(row, stat(path, &st) == 0, "no hints directory");
}

/* Every program refuses the spool (or a subdirectory) with a clear
 * error naming the path, and changes nothing. */
static void refused(const struct ctx *c, const char *row, const char *path,
		    const char *why)
{
	static const struct {
		const char *prog, *a1, *a2;
		const char *in;
	} cmds[] = {
		{"qctl", "list", "-c", NULL},
		{"qctl", "retry", NULL, NULL},
		{"qctl", "submit", "x@d.test", "Subject: s\n\nnot spooled\n"},
		{"qrun", "-v", NULL, NULL},
		{"qhints", "tidy", NULL, NULL},
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		struct t_out o;
		int rc = run_prog(cmds[i].prog, c, cmds[i].in, &o, cmds[i].a1,
				  cmds[i].a2, NULL);
		const char *err = o.err ? o.err : "";

		CHECK(row, rc > 0, "%s %s: exit status %d", cmds[i].prog, cmds[i].a1, rc);
		CHECK(row, strstr(err, path) != NULL && strstr(err, why) != NULL,
		      "%s %s: stderr does not name %s (%s): %s", cmds[i].prog,
		      cmds[i].a1, path, why, err);
		t_out_free(&o);
	}
}

static void test_spool_refused(void)
{
	struct ctx c;
	char id[Q_ID_LEN + 1], path[PATH_MAX + 64];
	static const mode_t modes[] = {0770, 0720, 0730, 0707, 0702, 0703, 0777};
	static const char *const subs[] = {"input", "db", "msglog", "log", "tmp"};

	CU_ASSERT_FATAL(ctx_init(&c, NULL) == 0);
	CU_ASSERT_FATAL(ctx_conf(&c, 1, "%s", "") == 0);
	CU_ASSERT_FATAL(submit(&c, "x@d.test", "y@d.test", id) == 0);
	CU_ASSERT_EQUAL_FATAL(queue_count(&c), 1);

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		char row[64];

		snprintf(row, sizeof(row), "spool %04o", (unsigned)modes[i]);
		CU_ASSERT_FATAL(chmod(c.spool, modes[i]) == 0);
		refused(&c, row, c.spool, (modes[i] & 002) ? "writable by others" :
			"writable by its group");
		CU_ASSERT_FATAL(chmod(c.spool, 0700) == 0);
		CHECK(row, queue_count(&c) == 1, "the queue changed");
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		char row[64];

		snprintf(row, sizeof(row), "%s 0777", subs[i]);
		snprintf(path, sizeof(path), "%s/%s", c.spool, subs[i]);
		CU_ASSERT_FATAL(chmod(path, 0777) == 0);
		refused(&c, row, path, "writable by others");
		CU_ASSERT_FATAL(chmod(path, 0700) == 0);
		snprintf(row, sizeof(row), "%s 0770", subs[i]);
		CU_ASSERT_FATAL(chmod(path, 0770) == 0);
		refused(&c, row, path, "writable by its group");
		CU_ASSERT_FATAL(chmod(path, 0700) == 0);
		CHECK(row, queue_count(&c) == 1, "the queue changed");
	}
	/* owned by someone else (root can make that happen) */
	if (geteuid() == 0) {
		CU_ASSERT_FATAL(chown(c.spool, 65534, (gid_t)-1) == 0);
		refused(&c, "owner 65534", c.spool, "owned by uid 65534");
		CU_ASSERT_FATAL(chown(c.spool, 0, (gid_t)-1) == 0);
		CHECK("owner 65534", queue_count(&c) == 1, "the queue changed");
	} else {
		fprintf(stderr, "tlsverify: not root: the spool-owner case is "
			"not run\n");
	}
	/* libq itself */
	struct q_spool *sp = NULL;
	const char *err = NULL;
	CU_ASSERT_FATAL(chmod(c.spool, 0777) == 0);
	CU_ASSERT_EQUAL(q_spool_open(c.spool, 0, &sp, &err), -1);
	CU_ASSERT_PTR_NULL(sp);
	CU_ASSERT(err != NULL && strstr(err, c.spool) != NULL);
	CU_ASSERT_FATAL(chmod(c.spool, 0700) == 0);
	CU_ASSERT_EQUAL(q_spool_open(c.spool, 0, &sp, &err), 0);
	q_spool_close(&sp);
}

static void test_spool_ids(void)
{
	struct ctx c;
	char id[Q_ID_LEN + 1], path[PATH_MAX + 64], bad1[40], bad2[40], bad3[40];
	static const char decoy[] = "decoy: root:x:0:0 must stay\n";
	/* where a naive path from "../decoy" or "../../decoy" would land */
	static const char *const decoys[] = {
		"spool/decoy", "spool/decoy-H", "spool/decoy-D", "spool/decoy-J",
		"spool/input/decoy-H", "spool/input/decoy-D", "spool/input/decoy-J",
		"decoy", "decoy-H", "decoy-D", "decoy-J",
	};

	CU_ASSERT_FATAL(ctx_init(&c, NULL) == 0);
	CU_ASSERT_FATAL(ctx_conf(&c, 1, "%s", "") == 0);
	CU_ASSERT_FATAL(submit(&c, "x@d.test", "y@d.test", id) == 0);
	for (size_t i = 0; i < sizeof(decoys) / sizeof(decoys[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", c.dir, decoys[i]);
		CU_ASSERT_FATAL(t_write_file(path, decoy) == 0);
	}
	/* ids one character away from the real one */
	snprintf(bad1, sizeof(bad1), "%s", id);
	bad1[6] = '/';
	snprintf(bad2, sizeof(bad2), "%s/..", id);
	snprintf(bad3, sizeof(bad3), "%.15s", id);
	const char *const bad[] = {
		"../decoy", "../../decoy", "../../../../../../../../etc/passwd",
		"/etc/passwd", ".", "..", "", bad1, bad2, bad3,
		"1xWEv9-0tbN-05a\n", "1xWEv9-0tbN-05aYY",
	};
	static const char *const verbs[][2] = {
		{"show", NULL}, {"show", "--body"}, {"show", "--log"},
		{"show", "--headers"}, {"freeze", NULL}, {"thaw", NULL}, {"rm", NULL},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char row[64];

		snprintf(row, sizeof(row), "id '%.20s'", bad[i]);
		for (size_t k = 0; k < sizeof(verbs) / sizeof(verbs[0]); k++) {
			struct t_out o;
			int rc = run_prog("qctl", &c, NULL, &o, verbs[k][0], bad[i],
					  verbs[k][1], NULL);

			CHECK(row, rc > 0, "qctl %s: exit %d", verbs[k][0], rc);
			CHECK(row, o.outlen == 0 || (strstr(o.out, "root:") == NULL &&
						   strstr(o.out, "decoy") == NULL),
			      "qctl %s printed: %.200s", verbs[k][0], o.out);
			CHECK(row, o.err && strstr(o.err, "not a message id") != NULL,
			      "qctl %s: no clear error: %s", verbs[k][0],
			      o.err ? o.err : "");
			t_out_free(&o);
		}
		struct t_out o;
		int rc = run_prog("qrun", &c, NULL, &o, "-M", bad[i], NULL);
		CHECK(row, rc == 64, "qrun -M: exit %d", rc);
		t_out_free(&o);
	}

	/* libq: no path is built from a bad id, nothing is read or written */
	struct q_spool *sp = NULL;
	const char *err = NULL;
	CU_ASSERT_FATAL(q_spool_open(c.spool, 0, &sp, &err) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char row[64], buf[PATH_MAX];
		struct q_env *env = NULL;
		struct q_msg *m = NULL;

		snprintf(row, sizeof(row), "libq id '%.20s'", bad[i]);
		CHECK(row, q_spool_path(sp, bad[i], 'H', buf, sizeof(buf))[0] == '\0' &&
		      q_spool_path(sp, bad[i], 'L', buf, sizeof(buf))[0] == '\0',
		      "q_spool_path built %s", buf);
		CHECK(row, q_spool_read(sp, bad[i], &env, &err) != 0 && env == NULL,
		      "q_spool_read accepted it");
		q_env_free(&env);
		CHECK(row, q_msg_lock(sp, bad[i], &m, &err) != 0 && m == NULL,
		      "q_msg_lock accepted it");
		if (m)
			q_msg_unlock(&m);
		CHECK(row, q_msglog(sp, bad[i], "written through a bad id", &err) < 0,
		      "q_msglog accepted it");
	}
	q_spool_close(&sp);

	/* the decoys and the real message are untouched */
	for (size_t i = 0; i < sizeof(decoys) / sizeof(decoys[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", c.dir, decoys[i]);
		char *d = t_read_file(path, NULL);
		CHECK(decoys[i], d != NULL && strcmp(d, decoy) == 0, "decoy changed");
		free(d);
	}
	CU_ASSERT_EQUAL(queue_count(&c), 1);
	struct t_out o;
	CU_ASSERT_EQUAL(run_prog("qctl", &c, NULL, &o, "show", id, "--json", NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out ? o.out : "", "\"frozen\":false"));
	t_out_free(&o);
}

void suite_tlsverify(void)
{
	CU_pSuite s = CU_add_suite("tlsverify", NULL, NULL);

	CU_add_test(s, "certificate checks with a CA made by the test (good chain, "
		    "intermediate, wrong name, expired, not yet valid, self-signed, "
		    "other CA)", test_verify);
	CU_add_test(s, "TLS 1.2 minimum: servers limited to TLS 1.1 and 1.0 refused",
		    test_min_version);
	CU_add_test(s, "spool 0700, files 0600 under umask 000", test_spool_modes);
	CU_add_test(s, "spool writable by group/others or not ours: refused, path "
		    "named", test_spool_refused);
	CU_add_test(s, "message ids are checked before paths are built",
		    test_spool_ids);
}
