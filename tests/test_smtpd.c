/*
 * tests/test_smtpd.c - suite_smtpd: the scripted test SMTP server
 * (tests/smtpd, see tests/smtpd.md) tested through plain sockets on
 * loopback.
 *
 * Each test starts the built server with posix_spawn (stdout on a pipe,
 * waiting for its "READY <port>" line), talks SMTP to it byte-exactly,
 * stops it with SIGTERM and checks its replies, its record file, its
 * stored messages and its final STATS line.  Covered: the sink and its
 * counters, the pipelining groups, RFC 2920 synchronization rejects,
 * per-RCPT replies, disconnects mid-DATA and around the final dot,
 * STARTTLS (TLS 1.3 and 1.2, a client certificate, session resumption,
 * no plaintext injection), the hostile replies, several listeners (one
 * refusing, one closing after N connections), script errors, and input
 * that must not hurt it.  Certificates come from the openssl command
 * (Debian package openssl), run without a shell.
 *
 * Every server runs with -t 30: if a test goes wrong, the server exits
 * by itself and the blocked read ends; no test depends on timing except
 * for waiting (bounded) for a line to appear in the record.
 */
#include "config.h"
#include "tests/tlib.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <CUnit/CUnit.h>

extern char **environ;

#define BANNER "220 mx.test ESMTP qkit test smtpd\r\n"

/* ---- the server -------------------------------------------------------- */

struct srv {
	pid_t pid;
	int out;		/* its stdout */
	int port;
	int ports[4];
	char dir[PATH_MAX];
	char rec[PATH_MAX + 8];
	char data[PATH_MAX + 8];
	char stats[256];	/* its last stdout line after stop */
	int status;
};

/* Start tests/smtpd with -p 0 -t 30 -r DIR/rec -d DIR/data, the script
 * text (if any) in DIR/script, and extra arguments. 0 or -1. */
static int srv_start(struct srv *s, const char *script,
	const char *const extra[])
{
	const char *argv[40];
	char sc[PATH_MAX + 8], line[256];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	int p[2], n = 0, e;
	size_t got = 0;
	const char *bin = t_bin("smtpd");
	char *dir = t_tmpdir();

	memset(s, 0, sizeof *s);
	s->pid = -1;
	s->out = -1;
	if (bin == NULL || dir == NULL)
		return -1;
	snprintf(s->dir, sizeof s->dir, "%s", dir);
	snprintf(s->rec, sizeof s->rec, "%s/rec", dir);
	snprintf(s->data, sizeof s->data, "%s/data", dir);
	if (mkdir(s->data, 0700) < 0)
		return -1;
	argv[n++] = bin;
	argv[n++] = "-p";
	argv[n++] = "0";
	argv[n++] = "-t";
	argv[n++] = "30";
	argv[n++] = "-r";
	argv[n++] = s->rec;
	argv[n++] = "-d";
	argv[n++] = s->data;
	if (script) {
		snprintf(sc, sizeof sc, "%s/script", dir);
		if (t_write_file(sc, script) < 0)
			return -1;
		argv[n++] = "-s";
		argv[n++] = sc;
	}
	for (int i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
	e = posix_spawn(&s->pid, bin, &fa, &at, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (e != 0) {
		close(p[0]);
		s->pid = -1;
		return -1;
	}
	s->out = p[0];
	while (got < sizeof line - 1) {
		ssize_t r = read(s->out, line + got, 1);

		if (r <= 0)
			return -1;
		if (line[got++] == '\n')
			break;
	}
	line[got] = '\0';
	if (sscanf(line, "READY %d %d %d %d", &s->ports[0], &s->ports[1],
		&s->ports[2], &s->ports[3]) < 1)
		return -1;
	s->port = s->ports[0];
	return 0;
}

/* SIGTERM, wait, keep the last stdout line (STATS ...). */
static void srv_stop(struct srv *s)
{
	char buf[4096];
	size_t len = 0;
	ssize_t r;
	int st;

	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	while ((r = read(s->out, buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t)r;
	buf[len] = '\0';
	while (len && buf[len - 1] == '\n')
		buf[--len] = '\0';
	{
		char *nl = strrchr(buf, '\n');

		snprintf(s->stats, sizeof s->stats, "%.255s", nl ? nl + 1 : buf);
	}
	close(s->out);
	while (waitpid(s->pid, &st, 0) < 0 && errno == EINTR)
		;
	s->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	s->pid = -1;
}

static char *rec_read(const struct srv *s)
{
	char *r = t_read_file(s->rec, NULL);

	return r ? r : strdup("");
}

/* Lines of the record that start with a and contain b (b may be NULL). */
static int rec_count(const char *rec, const char *a, const char *b)
{
	int n = 0;

	for (const char *p = rec; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *line = strndup(p, len);

		if (line && strncmp(line, a, strlen(a)) == 0 &&
		    (b == NULL || strstr(line, b)))
			n++;
		free(line);
		p += len + (nl != NULL);
	}
	return n;
}

/* Wait (at most about 10 s) until the record has a line with a and b. */
static int rec_wait(const struct srv *s, const char *a, const char *b)
{
	for (int i = 0; i < 1000; i++) {
		char *r = rec_read(s);
		int n = rec_count(r, a, b);
		struct timespec ts = { 0, 10 * 1000000L };

		free(r);
		if (n)
			return 1;
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* The group recorded for the first "<conn> cmd g=N <cmd>" line. */
static long rec_group(const char *rec, long conn, const char *cmd)
{
	char pre[32];
	int pl = snprintf(pre, sizeof pre, "%ld cmd g=", conn);

	for (const char *p = rec; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (strncmp(p, pre, (size_t)pl) == 0) {
			char *end;
			long g = strtol(p + pl, &end, 10);

			if (*end == ' ' && strncmp(end + 1, cmd, strlen(cmd)) == 0)
				return g;
		}
		p += len + (nl != NULL);
	}
	return -1;
}

/* ---- the client -------------------------------------------------------- */

struct cl {
	int fd;
	SSL *ssl;
	char buf[1 << 18];
	size_t len;
};

static int cl_open(struct cl *c, const char *ip, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timeval tv = { 30, 0 };

	memset(c, 0, sizeof *c);
	sa.sin_port = htons((unsigned short)port);
	inet_pton(AF_INET, ip, &sa.sin_addr);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -1;
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int e = errno;

		close(c->fd);
		c->fd = -1;
		errno = e;
		return -1;
	}
	return 0;
}

static void cl_close(struct cl *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);	/* else the session is not resumable */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int cl_send(struct cl *c, const char *s)
{
	size_t n = strlen(s);

	if (c->ssl)
		return SSL_write(c->ssl, s, (int)n) == (int)n ? 0 : -1;
	while (n) {
		ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);

		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One read into the buffer: >0 bytes, 0 EOF, -1 error (errno). */
static ssize_t cl_fill(struct cl *c)
{
	ssize_t r;

	if (c->len == sizeof c->buf)
		return -1;
	if (c->ssl) {
		int n = SSL_read(c->ssl, c->buf + c->len,
			(int)(sizeof c->buf - c->len));

		r = n > 0 ? n : SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	} else {
		r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
	}
	if (r > 0)
		c->len += (size_t)r;
	return r;
}

/* One whole reply (all its lines), malloc'd; NULL on EOF/error.  A line
 * whose 4th byte is not '-' ends the reply. */
static char *cl_reply(struct cl *c)
{
	for (;;) {
		size_t off = 0;

		for (;;) {
			char *nl = memchr(c->buf + off, '\n', c->len - off);
			size_t ll;

			if (nl == NULL)
				break;
			ll = (size_t)(nl - (c->buf + off)) + 1;
			if (ll < 5 || c->buf[off + 3] != '-') {
				char *r = strndup(c->buf, off + ll);

				memmove(c->buf, c->buf + off + ll, c->len - off - ll);
				c->len -= off + ll;
				return r;
			}
			off += ll;
		}
		if (cl_fill(c) <= 0)
			return NULL;
	}
}

/* Exactly n bytes, malloc'd and NUL-terminated; NULL if fewer came. */
static char *cl_bytes(struct cl *c, size_t n)
{
	char *r;

	while (c->len < n)
		if (cl_fill(c) <= 0)
			return NULL;
	r = strndup(c->buf, n);
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
	return r;
}

/* 0 when the next read is EOF with nothing before it. */
static int cl_eof(struct cl *c)
{
	return c->len == 0 && cl_fill(c) == 0 ? 0 : -1;
}

/* Send s, expect exactly reply r. */
static int cl_cmd(struct cl *c, const char *s, const char *r)
{
	char *got;
	int ok;

	if (s && cl_send(c, s) < 0)
		return -1;
	got = cl_bytes(c, strlen(r));
	ok = got && strcmp(got, r) == 0;
	if (!ok)
		fprintf(stderr, "\nsmtpd test: sent %s expected %s got %s\n",
			s ? s : "(nothing)", r, got ? got : "(EOF)");
	free(got);
	return ok ? 0 : -1;
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (unsigned int i = 0; i < len && i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[64] = '\0';
}

/* ---- tests --------------------------------------------------------------- */

#define EHLO_SINK "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n" \
	"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"

/* message as stored / the same on the wire, dot-stuffed */
static const char msg1[] = "Message-ID: <m1@qkit.test>\r\nSubject: t\r\n\r\n"
	".leading dot\r\n.\r\n..\r\nend\r\n";
static const char msg1_wire[] = "Message-ID: <m1@qkit.test>\r\nSubject: t\r\n\r\n"
	"..leading dot\r\n..\r\n...\r\nend\r\n.\r\n";

static void test_sink(void)
{
	struct srv s;
	struct cl c;
	char *rec, path[PATH_MAX + 16], hex[65], want[128], *file;
	size_t flen = 0;

	CU_ASSERT_FATAL(srv_start(&s, NULL, NULL) == 0);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO client.test\r\n", EHLO_SINK) == 0);
	for (int i = 0; i < 3; i++) {
		CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@qkit.test>\r\n"
			"RCPT TO:<x@one.test>\r\nRCPT TO:<y@two.test>\r\nDATA\r\n",
			"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
			"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
		snprintf(want, sizeof want, "250 2.0.0 Ok: queued as 1.%d\r\n",
			i + 1);
		CU_ASSERT(cl_cmd(&c, i ? "Subject: x\r\n\r\nbody\r\n.\r\n" :
			msg1_wire, want) == 0);
	}
	CU_ASSERT(cl_cmd(&c, "QUIT\r\n", "221 2.0.0 Bye\r\n") == 0);
	CU_ASSERT(cl_eof(&c) == 0);
	cl_close(&c);

	/* a second connection, lock-step, with HELO: no enhanced codes */
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "HELO client.test\r\n", "250 mx.test\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<>\r\n", "250 Ok\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "RCPT TO:<z@three.test>\r\n", "250 Ok\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, ".\r\n", "250 Ok: queued as 2.1\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "QUIT\r\n", "221 Bye\r\n") == 0);
	cl_close(&c);
	srv_stop(&s);

	CU_ASSERT_EQUAL(s.status, 0);
	CU_ASSERT_STRING_EQUAL(s.stats,
		"STATS conns=2 msgs=4 rcpts=7 tls=0 resumed=0");
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "STATS conns=2 msgs=4 rcpts=7 tls=0 resumed=0",
		NULL) == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=", "code=250") == 3);
	CU_ASSERT(rec_count(rec, "2 msg n=", "code=250") == 1);
	sha256_hex(msg1, sizeof msg1 - 1, hex);
	snprintf(want, sizeof want, "size=%zu wire=%zu sha256=%s",
		sizeof msg1 - 1, sizeof msg1_wire - 1 - 3, hex);
	CU_ASSERT(rec_count(rec, "1 msg n=1 ", want) == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=1 ", "from=<a@qkit.test> "
		"to=<x@one.test>,<y@two.test> ") == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=1 ", "msgid=<m1@qkit.test>") == 1);
	CU_ASSERT(rec_count(rec, "2 msg n=1 ", "from=<> to=<z@three.test> size=0") == 1);
	CU_ASSERT(rec_count(rec, "1 close ", "reason=quit msgs=3 accepted=3") == 1);
	CU_ASSERT(rec_count(rec, "1 open ", "peer=127.0.0.1:") == 1);
	free(rec);
	/* the stored message is the un-stuffed data, byte for byte */
	snprintf(path, sizeof path, "%s/1.1.eml", s.data);
	file = t_read_file(path, &flen);
	CU_ASSERT_PTR_NOT_NULL(file);
	CU_ASSERT(file && flen == sizeof msg1 - 1 &&
		memcmp(file, msg1, flen) == 0);
	free(file);
}

static void test_groups(void)
{
	struct srv s;
	struct cl c;
	char *rec;
	long g_ehlo, g_mail, g_rcpt, g_data, g2[3];

	CU_ASSERT_FATAL(srv_start(&s, NULL, NULL) == 0);
	/* a pipelining client: MAIL, RCPT, DATA in one write */
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
		"DATA\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "x\r\n.\r\n", "250 2.0.0 Ok: queued as 1.1\r\n") == 0);
	cl_close(&c);
	/* a lock-step client */
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "RCPT TO:<c@d.test>\r\n", "250 2.1.5 Ok\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "x\r\n.\r\n", "250 2.0.0 Ok: queued as 2.1\r\n") == 0);
	cl_close(&c);
	CU_ASSERT(rec_wait(&s, "2 close ", NULL));
	srv_stop(&s);

	rec = rec_read(&s);
	g_ehlo = rec_group(rec, 1, "EHLO");
	g_mail = rec_group(rec, 1, "MAIL");
	g_rcpt = rec_group(rec, 1, "RCPT");
	g_data = rec_group(rec, 1, "DATA");
	CU_ASSERT_EQUAL(g_ehlo, 1);
	CU_ASSERT(g_mail > g_ehlo);
	CU_ASSERT_EQUAL(g_rcpt, g_mail);
	CU_ASSERT_EQUAL(g_data, g_mail);
	g2[0] = rec_group(rec, 2, "MAIL");
	g2[1] = rec_group(rec, 2, "RCPT");
	g2[2] = rec_group(rec, 2, "DATA");
	CU_ASSERT(g2[0] > rec_group(rec, 2, "EHLO"));
	CU_ASSERT(g2[1] > g2[0]);
	CU_ASSERT(g2[2] > g2[1]);
	free(rec);
}

/* RFC 2920: "sync reject" refuses pipelined input unless PIPELINING was
 * advertised (and even then after EHLO, DATA, ...). */
static void test_sync_reject(void)
{
	static const char script[] =
		"# no PIPELINING: a client must wait for every reply\n"
		"ext 8BITMIME\n"
		"sync reject\n"
		"conn 2\n"
		"ext PIPELINING\n";
	struct srv s;
	struct cl c;
	char *rec;

	CU_ASSERT_FATAL(srv_start(&s, script, NULL) == 0);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", "250-mx.test\r\n250 8BITMIME\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\n", "250 Ok\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "RCPT TO:<c@d.test>\r\nRCPT TO:<e@d.test>\r\n",
		"554 Error: SMTP synchronization error\r\n") == 0);
	CU_ASSERT(cl_eof(&c) == 0);
	cl_close(&c);
	/* conn 2 advertises PIPELINING: the same group is fine there,
	 * but DATA followed by data is still a violation */
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", "250-mx.test\r\n250 PIPELINING\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
		"DATA\r\n", "250 Ok\r\n250 Ok\r\n"
		"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "x\r\n.\r\n", "250 Ok: queued as 2.1\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
		"DATA\r\nearly data\r\n", "250 Ok\r\n250 Ok\r\n"
		"554 Error: SMTP synchronization error\r\n") == 0);
	CU_ASSERT(cl_eof(&c) == 0);
	cl_close(&c);
	CU_ASSERT(rec_wait(&s, "2 close ", "reason=sync-error"));
	srv_stop(&s);
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "1 sync-error", NULL) == 1);
	CU_ASSERT(rec_count(rec, "1 close ", "reason=sync-error") == 1);
	CU_ASSERT(rec_count(rec, "2 msg n=1 ", "code=250") == 1);
	free(rec);
	CU_ASSERT_STRING_EQUAL(s.stats,
		"STATS conns=2 msgs=1 rcpts=1 tls=0 resumed=0");
}

static void test_rcpt_replies(void)
{
	static const char script[] =
		"RCPT 2: 450 4.2.0 try later\n"
		"RCPT 3: 550 5.1.1 no such user\n"
		"rcpt 4: 250-first line\\n250 2.1.5 multi-line ok\n"
		"conn 2\n"
		"rcpt: 550 5.1.1 nobody here\n"
		"data: 554 5.5.1 no valid recipients\n";
	struct srv s;
	struct cl c;
	char *rec;

	CU_ASSERT_FATAL(srv_start(&s, script, NULL) == 0);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
	for (int i = 0; i < 2; i++) {	/* per transaction, twice */
		CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\n"
			"RCPT TO:<r1@x.test>\r\nRCPT TO:<r2@x.test>\r\n"
			"RCPT TO:<r3@x.test>\r\nRCPT TO:<r4@x.test>\r\nDATA\r\n",
			"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450 4.2.0 try later\r\n"
			"550 5.1.1 no such user\r\n"
			"250-first line\r\n250 2.1.5 multi-line ok\r\n"
			"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
		CU_ASSERT(cl_cmd(&c, "x\r\n.\r\n", i ?
			"250 2.0.0 Ok: queued as 1.2\r\n" :
			"250 2.0.0 Ok: queued as 1.1\r\n") == 0);
	}
	cl_close(&c);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<r1@x.test>\r\n"
		"DATA\r\n", "250 2.1.0 Ok\r\n550 5.1.1 nobody here\r\n"
		"554 5.5.1 no valid recipients\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "RSET\r\n", "250 2.0.0 Ok\r\n") == 0);
	cl_close(&c);
	CU_ASSERT(rec_wait(&s, "2 close ", NULL));
	srv_stop(&s);
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "1 msg n=1 ", "to=<r1@x.test>,<r4@x.test> ") == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=2 ", "to=<r1@x.test>,<r4@x.test> ") == 1);
	CU_ASSERT(rec_count(rec, "2 msg", NULL) == 0);
	free(rec);
	CU_ASSERT_STRING_EQUAL(s.stats,
		"STATS conns=2 msgs=2 rcpts=4 tls=0 resumed=0");
}

/* Disconnects during the data and around the reply to the final dot. */
static void test_mid_data(void)
{
	static const struct {
		const char *script;
		int send_dot;		/* send the whole message */
		const char *reply;	/* to the final dot; NULL: none */
		const char *rec1, *rec2;	/* a record line with both */
		const char *stats;
	} cases[] = {
		{ "body 1000: close\n", 0, NULL, "1 body bytes=", "rule=1000",
		  "STATS conns=1 msgs=0 rcpts=0 tls=0 resumed=0" },
		{ "body 1000: 421 4.4.2 timeout; close\n", 0,
		  "421 4.4.2 timeout\r\n", "1 close ", "reason=script-close",
		  "STATS conns=1 msgs=0 rcpts=0 tls=0 resumed=0" },
		{ "dot: default; drop\n", 1, NULL, "1 msg n=1 ", "code=250",
		  "STATS conns=1 msgs=1 rcpts=1 tls=0 resumed=0" },
		{ "dot: default; close\n", 1,
		  "250 2.0.0 Ok: queued as 1.1\r\n", "1 close ",
		  "reason=script-close msgs=1 accepted=1",
		  "STATS conns=1 msgs=1 rcpts=1 tls=0 resumed=0" },
		{ "dot: close\n", 1, NULL, "1 msg n=1 ", "code=-",
		  "STATS conns=1 msgs=0 rcpts=0 tls=0 resumed=0" },
		{ "dot: 451 4.3.0 try again; close\n", 1,
		  "451 4.3.0 try again\r\n", "1 msg n=1 ", "code=451",
		  "STATS conns=1 msgs=0 rcpts=0 tls=0 resumed=0" },
		/* a body rule that the message does not reach */
		{ "body 100000: close\n", 1,
		  "250 2.0.0 Ok: queued as 1.1\r\n", "1 msg n=1 ", "code=250",
		  "STATS conns=1 msgs=1 rcpts=1 tls=0 resumed=0" },
	};
	char body[3001];

	memset(body, 'b', sizeof body - 1);
	for (size_t i = 0; i < sizeof body - 1; i += 100)
		body[i + 98] = '\r', body[i + 99] = '\n';
	body[sizeof body - 1] = '\0';
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct srv s;
		struct cl c;
		char *rec, *got;

		CU_ASSERT_FATAL(srv_start(&s, cases[i].script, NULL) == 0);
		CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
		CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
		CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
		CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
			"DATA\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
			"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
		cl_send(&c, body);
		if (cases[i].send_dot)
			cl_send(&c, ".\r\n");
		got = cl_reply(&c);
		if (cases[i].reply) {
			CU_ASSERT(got && strcmp(got, cases[i].reply) == 0);
			if (got && strstr(cases[i].reply, "queued") &&
			    strstr(cases[i].script, "body"))
				cl_send(&c, "QUIT\r\n"), free(cl_reply(&c));
			else
				CU_ASSERT(cl_eof(&c) == 0);
		} else {
			CU_ASSERT_PTR_NULL(got);
		}
		free(got);
		cl_close(&c);
		CU_ASSERT(rec_wait(&s, "1 close ", NULL));
		srv_stop(&s);
		rec = rec_read(&s);
		if (rec_count(rec, cases[i].rec1, cases[i].rec2) != 1)
			fprintf(stderr, "\nsmtpd case %zu: no '%s...%s' in\n%s",
				i, cases[i].rec1, cases[i].rec2, rec);
		CU_ASSERT(rec_count(rec, cases[i].rec1, cases[i].rec2) == 1);
		CU_ASSERT_STRING_EQUAL(s.stats, cases[i].stats);
		free(rec);
	}
}

/* openssl req -x509 ... (no shell): key and certificate for subject */
static int make_cert(const char *dir, const char *name, const char *subj,
	char *key, char *crt, size_t n)
{
	struct t_out o;
	int rc;

	snprintf(key, n, "%s/%s.key", dir, name);
	snprintf(crt, n, "%s/%s.crt", dir, name);
	{
		const char *const argv[] = { "openssl", "req", "-x509",
			"-newkey", "rsa:2048", "-nodes", "-days", "1",
			"-subj", subj, "-keyout", key, "-out", crt, NULL };

		if (t_run(argv, NULL, &o) < 0)
			return -1;
	}
	rc = o.status == 0 ? 0 : -1;
	if (rc)
		fprintf(stderr, "openssl req: %s", o.err);
	t_out_free(&o);
	return rc;
}

static SSL *tls_client(SSL_CTX *ctx, struct cl *c, SSL_SESSION *sess)
{
	SSL *ssl = SSL_new(ctx);

	if (ssl == NULL)
		return NULL;
	SSL_set_fd(ssl, c->fd);
	SSL_set_tlsext_host_name(ssl, "mx.test");
	if (sess)
		SSL_set_session(ssl, sess);
	if (SSL_connect(ssl) != 1) {
		ERR_print_errors_fp(stderr);
		SSL_free(ssl);
		return NULL;
	}
	c->ssl = ssl;
	return ssl;
}

static void test_starttls(void)
{
	static const char *const versions[] = { "1.3", "1.2" };
	char dir[PATH_MAX], key[PATH_MAX + 16], crt[PATH_MAX + 16];
	char ckey[PATH_MAX + 16], ccrt[PATH_MAX + 16];
	char *t = t_tmpdir();

	CU_ASSERT_FATAL(t != NULL);
	snprintf(dir, sizeof dir, "%s", t);
	CU_ASSERT_FATAL(make_cert(dir, "server", "/CN=mx.test", key, crt,
		sizeof key) == 0);
	CU_ASSERT_FATAL(make_cert(dir, "client", "/CN=client.test", ckey, ccrt,
		sizeof ckey) == 0);
	for (size_t v = 0; v < 2; v++) {
		const char *const extra[] = { "-c", crt, "-k", key, "-C", "-T",
			versions[v], NULL };
		SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
		SSL_SESSION *sess = NULL;
		struct srv s;
		struct cl c;
		char *rec, *r, want[64];

		CU_ASSERT_FATAL(ctx != NULL);
		SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
		CU_ASSERT(SSL_CTX_use_certificate_file(ctx, ccrt, SSL_FILETYPE_PEM) == 1);
		CU_ASSERT(SSL_CTX_use_PrivateKey_file(ctx, ckey, SSL_FILETYPE_PEM) == 1);
		CU_ASSERT_FATAL(srv_start(&s, NULL, extra) == 0);
		for (int round = 0; round < 2; round++) {
			CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
			CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
			r = cl_reply((cl_send(&c, "EHLO c\r\n"), &c));
			CU_ASSERT(r && strstr(r, "250 STARTTLS\r\n"));
			free(r);
			/* a command pipelined after STARTTLS must be dropped */
			CU_ASSERT(cl_cmd(&c, "STARTTLS\r\nEHLO evil\r\n",
				"220 2.0.0 Ready to start TLS\r\n") == 0);
			CU_ASSERT_FATAL(tls_client(ctx, &c, sess) != NULL);
			CU_ASSERT_EQUAL(SSL_session_reused(c.ssl), round == 1);
			CU_ASSERT_STRING_EQUAL(SSL_get_version(c.ssl),
				v == 0 ? "TLSv1.3" : "TLSv1.2");
			/* RFC 3207: EHLO state forgotten */
			CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\n",
				"503 Error: send HELO/EHLO first\r\n") == 0);
			r = cl_reply((cl_send(&c, "EHLO c\r\n"), &c));
			CU_ASSERT(r && strstr(r, "PIPELINING") &&
				!strstr(r, "STARTTLS"));
			free(r);
			CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b.test>\r\n"
				"RCPT TO:<c@d.test>\r\nDATA\r\n",
				"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
				"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
			snprintf(want, sizeof want,
				"250 2.0.0 Ok: queued as %d.1\r\n", round + 1);
			CU_ASSERT(cl_cmd(&c, msg1_wire, want) == 0);
			CU_ASSERT(cl_cmd(&c, "QUIT\r\n", "221 2.0.0 Bye\r\n") == 0);
			if (sess == NULL)
				sess = SSL_get1_session(c.ssl);
			cl_close(&c);
		}
		CU_ASSERT(rec_wait(&s, "2 close ", NULL));
		srv_stop(&s);
		CU_ASSERT_STRING_EQUAL(s.stats,
			"STATS conns=2 msgs=2 rcpts=2 tls=2 resumed=1");
		rec = rec_read(&s);
		snprintf(want, sizeof want, "version=TLSv%s", versions[v]);
		CU_ASSERT(rec_count(rec, "1 tls ", want) == 1);
		CU_ASSERT(rec_count(rec, "1 tls ", "resumed=0 cert=/CN=client.test") == 1);
		CU_ASSERT(rec_count(rec, "2 tls ", "resumed=1") == 1);
		CU_ASSERT(rec_count(rec, "1 discard plaintext-after-starttls=11",
			NULL) == 1);
		CU_ASSERT(rec_count(rec, "2 discard plaintext-after-starttls=11",
			NULL) == 1);
		CU_ASSERT(rec_count(rec, "", "EHLO evil") == 0);
		CU_ASSERT(rec_count(rec, "", "EHLO c") == 4);
		free(rec);
		SSL_SESSION_free(sess);
		SSL_CTX_free(ctx);
	}
}

/* Hostile peers, byte-exact.  Steps: ">" send, "<" expect exactly these
 * bytes, "E" expect EOF, "R" expect a reset, "W" shut our write side. */
static void test_hostile(void)
{
	static const struct {
		const char *name, *script;
		const char *steps[10];
	} cases[] = {
		{ "421 at MAIL", "mail: 421 4.3.2 shutting down; close\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\n", "<421 4.3.2 shutting down\r\n", "E" } },
		{ "421 instead of the banner", "banner: 421 4.3.2 busy; close\n",
		  { "<421 4.3.2 busy\r\n", "E" } },
		{ "not 3 digits", "mail: 25 ok\nrcpt: 2500 ok\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
		    "<25 ok\r\n2500 ok\r\n" } },
		{ "250 to DATA", "data: 250 2.0.0 not 354\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
		    "<250 Ok\r\n250 Ok\r\n250 2.0.0 not 354\r\n",
		    ">NOOP\r\n", "<250 Ok\r\n" } },
		{ "out of order", "rcpt 1: hold; 550 5.1.1 first\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@d>\r\nDATA\r\n",
		    "<250 Ok\r\n250 Ok\r\n550 5.1.1 first\r\n"
		    "354 End data with <CR><LF>.<CR><LF>\r\n" } },
		{ "missing reply", "rcpt 1: noreply\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
		    "<250 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n" } },
		{ "trickled multi-line", "ehlo: trickle 2; 250-mx\\n250 PIPELINING\n",
		  { "<" BANNER, ">EHLO c\r\n", "<250-mx\r\n250 PIPELINING\r\n" } },
		{ "garbage for a ServerHello",
		  "starttls: 220 go; raw \\x16\\x03\\x03garbage; stall\n",
		  { "<" BANNER, ">STARTTLS\r\n", "<220 go\r\n\x16\x03\x03garbage",
		    ">\x16\x03\x01\x00\x05hello", "W", "E" } },
		{ "TLS handshake stalls", "starttls: 220 go; stall\n",
		  { "<" BANNER, ">STARTTLS\r\n", "<220 go\r\n",
		    ">\x16\x03\x01\x00\x05hello", "W", "E" } },
		{ "close after STARTTLS 220", "starttls: 220 go; close\n",
		  { "<" BANNER, ">STARTTLS\r\n", "<220 go\r\n", "E" } },
		{ "never speaks", "banner: stall\n",
		  { ">EHLO c\r\n", "W", "E" } },
		{ "stalls at MAIL", "mail: stall\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\n", "W", "E" } },
		{ "freezes at MAIL", "mail: freeze\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\n", "W", "E" } },
		{ "reset at RCPT 2", "rcpt 2: rst\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@d>\r\n",
		    "R" } },
		{ "delay and escapes", "mail: delay 20; 250 a\\tb\\\\c\\;d\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\n", "<250 a\tb\\c;d\r\n" } },
		{ "generated reply, then the default",
		  "mail: longline 20; default\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\n",
		    "<250 xxxxxxxxxxxxxx\r\n250 Ok\r\n" } },
		{ "raw, then the default", "helo: raw \\x7f\\x01\n",
		  { "<" BANNER, ">HELO c\r\n", "<\x7f\x01" "250 mx.test\r\n" } },
		{ "per occurrence", "mail#2: 452 4.3.1 full\n",
		  { "<" BANNER, ">HELO c\r\n", "<250 mx.test\r\n",
		    ">MAIL FROM:<a@b>\r\nRSET\r\nMAIL FROM:<a@b>\r\n",
		    "<250 Ok\r\n250 Ok\r\n452 4.3.1 full\r\n" } },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct srv s;
		struct cl c;
		int ok = 1;

		CU_ASSERT_FATAL(srv_start(&s, cases[i].script, NULL) == 0);
		CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
		for (int k = 0; ok && cases[i].steps[k]; k++) {
			const char *st = cases[i].steps[k];

			switch (st[0]) {
			case '>':
				ok = cl_send(&c, st + 1) == 0;
				break;
			case '<':
				ok = cl_cmd(&c, NULL, st + 1) == 0;
				break;
			case 'E':
				ok = cl_eof(&c) == 0;
				break;
			case 'R': {
				ssize_t r = cl_fill(&c);

				ok = r < 0 && errno == ECONNRESET;
				break;
			}
			case 'W':
				ok = shutdown(c.fd, SHUT_WR) == 0;
				break;
			}
			if (!ok)
				fprintf(stderr, "\nsmtpd hostile case '%s': step %d "
					"failed\n", cases[i].name, k);
			CU_ASSERT(ok);
		}
		cl_close(&c);
		CU_ASSERT(rec_wait(&s, "1 close ", NULL));
		srv_stop(&s);
		CU_ASSERT_EQUAL(s.status, 0);
	}
}

/* The big ones: 100 KB reply, a 5000-byte line, a reply without end. */
static void test_big_replies(void)
{
	static const char script[] =
		"mail: big 100000\n"
		"rcpt 1: longline 5000 451\n"
		"rcpt 2: endless 0\n";
	struct srv s;
	struct cl c;
	char *r, *rec;
	size_t total = 0, col = 0;
	int ended = 0;

	CU_ASSERT_FATAL(srv_start(&s, script, NULL) == 0);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "HELO c\r\n", "250 mx.test\r\n") == 0);
	CU_ASSERT(cl_send(&c, "MAIL FROM:<a@b>\r\n") == 0);
	r = cl_reply(&c);
	CU_ASSERT(r && strlen(r) == 100000 && strncmp(r, "250-", 4) == 0);
	CU_ASSERT(r && strstr(r, "\r\n250 ") && r[99998] == '\r');
	free(r);
	CU_ASSERT(cl_send(&c, "RCPT TO:<c@d>\r\n") == 0);
	r = cl_reply(&c);
	CU_ASSERT(r && strlen(r) == 5000 && strncmp(r, "451 ", 4) == 0 &&
		strchr(r, '\n') == r + 4999);
	free(r);
	/* endless: 200 KB of continuation lines and no last line */
	CU_ASSERT(cl_send(&c, "RCPT TO:<e@d>\r\n") == 0);
	while (total < 200000) {
		c.len = 0;
		if (cl_fill(&c) <= 0)
			break;
		for (size_t i = 0; i < c.len; i++) {
			if (col == 3 && c.buf[i] != '-')
				ended = 1;
			col = c.buf[i] == '\n' ? 0 : col + 1;
		}
		total += c.len;
	}
	CU_ASSERT_FALSE(ended);
	CU_ASSERT(total >= 200000);
	cl_close(&c);
	CU_ASSERT(rec_wait(&s, "1 close ", "reason=endless-end"));
	srv_stop(&s);
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "1 reply 250-xxx", "...[+") == 1);
	free(rec);
}

static void test_listeners(void)
{
	static const char script[] =
		"conn default @2\n"
		"banner: 554 5.7.1 not here\n"
		"conn 2 @127.0.0.1\n"
		"banner: 220 second on one\n";
	const char *const extra[] = { "-l", "127.0.0.1", "-l", "127.0.0.2,max=2",
		"-l", "127.0.0.3,refuse", NULL };
	struct srv s;
	struct cl c;
	char *rec;

	CU_ASSERT_FATAL(srv_start(&s, script, extra) == 0);
	CU_ASSERT(s.ports[0] > 0 && s.ports[1] == s.ports[0] &&
		s.ports[2] == s.ports[0]);
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
		CU_ASSERT(cl_cmd(&c, NULL, i ? "220 second on one\r\n" : BANNER) == 0);
		cl_close(&c);
	}
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_FATAL(cl_open(&c, "127.0.0.2", s.port) == 0);
		CU_ASSERT(cl_cmd(&c, NULL, "554 5.7.1 not here\r\n") == 0);
		CU_ASSERT(cl_cmd(&c, "QUIT\r\n", "221 Bye\r\n") == 0);
		cl_close(&c);
	}
	/* max=2 reached: refused from now on, like the refusing one */
	CU_ASSERT(cl_open(&c, "127.0.0.2", s.port) < 0 && errno == ECONNREFUSED);
	CU_ASSERT(cl_open(&c, "127.0.0.3", s.port) < 0 && errno == ECONNREFUSED);
	CU_ASSERT(rec_wait(&s, "4 close ", NULL));
	srv_stop(&s);
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "0 listen listener=3", "refuse=1") == 1);
	CU_ASSERT(rec_count(rec, "0 unlisten listener=2", NULL) == 1);
	CU_ASSERT(rec_count(rec, "4 open ", "listener=2 n=2 ") == 1);
	free(rec);
	CU_ASSERT_STRING_EQUAL(s.stats,
		"STATS conns=4 msgs=0 rcpts=0 tls=0 resumed=0");
}

static void test_script_errors(void)
{
	static const struct {
		const char *script, *err;
	} cases[] = {
		{ "hello there\n", "script:1: cannot parse" },
		{ "# ok\n\nmail 2: 250 ok\n", "script:3: only rcpt and body" },
		{ "rcpt x: 250 ok\n", "script:1: bad number" },
		{ "body: close\n", "script:1: body needs a byte count" },
		{ "mail: delay\n", "script:1: delay needs a number" },
		{ "mail: raw\n", "script:1: raw needs bytes" },
		{ "mail: 250 \\q\n", "script:1: bad escape" },
		{ "mail:\n", "script:1: no steps" },
		{ "bogus: 250\n", "script:1: unknown point" },
		{ "conn 0\n", "script:1: bad connection range" },
		{ "conn 1 @9\n", "script:1: bad listener" },
		{ "ext +A B\n", "script:1: ext: either" },
		{ "sync maybe\n", "script:1: usage: sync" },
		{ "mail: close now\n", "script:1: close takes no argument" },
		{ "mail: big 5\n", "script:1: size out of range" },
	};
	char *dir = t_tmpdir();
	char path[PATH_MAX];
	const char *bin = t_bin("smtpd");

	CU_ASSERT_FATAL(dir != NULL && bin != NULL);
	snprintf(path, sizeof path, "%s/script", dir);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *const argv[] = { bin, "-p", "0", "-t", "5", "-s", path,
			NULL };
		struct t_out o;

		CU_ASSERT_FATAL(t_write_file(path, cases[i].script) == 0);
		CU_ASSERT_FATAL(t_run(argv, NULL, &o) == 0);
		CU_ASSERT_EQUAL(o.status, 2);
		if (!strstr(o.err, cases[i].err))
			fprintf(stderr, "\nsmtpd script case %zu: stderr %s", i, o.err);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.err, cases[i].err));
		CU_ASSERT_PTR_NULL(strstr(o.out, "READY"));
		t_out_free(&o);
	}
	{	/* bad options and non-loopback addresses */
		const char *const a1[] = { bin, "-l", "192.0.2.1", "-t", "1", NULL };
		const char *const a2[] = { bin, "-x", NULL };
		struct t_out o;

		CU_ASSERT(t_run(a1, NULL, &o) == 0 && o.status == 2 &&
			strstr(o.err, "loopback"));
		t_out_free(&o);
		CU_ASSERT(t_run(a2, NULL, &o) == 0 && o.status == 2 &&
			strstr(o.err, "usage"));
		t_out_free(&o);
	}
}

/* Input that must not hurt: an overlong line, binary junk, too many
 * recipients, bare LFs and 8-bit data; the server still serves. */
static void test_robust(void)
{
	struct srv s;
	struct cl c;
	char *big = malloc(10003), *rcpts, *rec, *r;
	size_t off = 0;
	int n452 = 0, n250 = 0;

	CU_ASSERT_FATAL(big != NULL);
	memset(big, 'A', 10000);
	memcpy(big + 10000, "\r\n", 3);
	CU_ASSERT_FATAL(srv_start(&s, NULL, NULL) == 0);
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, big, "500 Error: line too long\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "\x01\xff\x7f junk\r\n",
		"500 Error: command not recognized\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "\r\n", "500 Error: bad syntax\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b>\r\n",
		"503 Error: send HELO/EHLO first\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO\r\n", "501 Syntax: EHLO hostname\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "EHLO c\r\n", EHLO_SINK) == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:a@b\r\n",
		"501 5.5.4 Syntax: MAIL FROM:<address>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b> SIZE=99999999999\r\n",
		"552 5.3.4 Message size exceeds fixed limit\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "RCPT TO:<a@b>\r\n",
		"503 5.5.1 Error: need MAIL command\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "DATA\r\n",
		"503 5.5.1 Error: need RCPT command\r\n") == 0);
	/* 1001 recipients in one write */
	rcpts = malloc(1001 * 32 + 64);
	CU_ASSERT_FATAL(rcpts != NULL);
	off = (size_t)sprintf(rcpts, "MAIL FROM:<a@b>\r\n");
	for (int i = 0; i < 1001; i++)
		off += (size_t)sprintf(rcpts + off, "RCPT TO:<r%d@x.test>\r\n", i);
	CU_ASSERT(cl_send(&c, rcpts) == 0);
	for (int i = 0; i < 1002; i++) {
		r = cl_reply(&c);
		if (r == NULL)
			break;
		n250 += strncmp(r, "250 ", 4) == 0;
		n452 += strcmp(r, "452 4.5.3 Error: too many recipients\r\n") == 0;
		free(r);
	}
	CU_ASSERT_EQUAL(n250, 1001);
	CU_ASSERT_EQUAL(n452, 1);
	/* bare LFs and 8-bit bytes are recorded, not fixed */
	CU_ASSERT(cl_cmd(&c, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, "a\nb\n\xc3\xa9\r\n.\r\n",
		"250 2.0.0 Ok: queued as 1.1\r\n") == 0);
	/* an empty message */
	CU_ASSERT(cl_cmd(&c, "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
		"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
		"354 End data with <CR><LF>.<CR><LF>\r\n") == 0);
	CU_ASSERT(cl_cmd(&c, ".\r\n", "250 2.0.0 Ok: queued as 1.2\r\n") == 0);
	cl_close(&c);
	/* still serving */
	CU_ASSERT_FATAL(cl_open(&c, "127.0.0.1", s.port) == 0);
	CU_ASSERT(cl_cmd(&c, NULL, BANNER) == 0);
	CU_ASSERT(cl_cmd(&c, "QUIT\r\n", "221 Bye\r\n") == 0);
	cl_close(&c);
	CU_ASSERT(rec_wait(&s, "2 close ", NULL));
	srv_stop(&s);
	rec = rec_read(&s);
	CU_ASSERT(rec_count(rec, "1 cmd g=", "[line too long]") == 1);
	CU_ASSERT(rec_count(rec, "1 cmd g=", "\\x01\\xff\\x7f junk") == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=1 ", "barelf=2 8bit=1") == 1);
	CU_ASSERT(rec_count(rec, "1 msg n=2 ", "size=0 wire=0") == 1);
	free(rec);
	CU_ASSERT_STRING_EQUAL(s.stats,
		"STATS conns=2 msgs=2 rcpts=1001 tls=0 resumed=0");
	free(big);
	free(rcpts);
}

void suite_smtpd(void)
{
	CU_pSuite s = CU_add_suite("smtpd", NULL, NULL);

	if (s == NULL)
		return;
	CU_add_test(s, "sink: replies, counters, record, stored data", test_sink);
	CU_add_test(s, "pipelining groups in the record", test_groups);
	CU_add_test(s, "sync reject without PIPELINING", test_sync_reject);
	CU_add_test(s, "per-RCPT scripted replies", test_rcpt_replies);
	CU_add_test(s, "disconnects mid-DATA and at the final dot", test_mid_data);
	CU_add_test(s, "STARTTLS 1.3/1.2, client cert, resumption", test_starttls);
	CU_add_test(s, "hostile replies", test_hostile);
	CU_add_test(s, "100 KB, long-line and endless replies", test_big_replies);
	CU_add_test(s, "several listeners, refuse, max=N", test_listeners);
	CU_add_test(s, "script errors", test_script_errors);
	CU_add_test(s, "bad input does not hurt", test_robust);
}
