/*
 * tests/test_qrun.c - suite_qrun: the delivery runner (bin/qrun, the
 * engine in libq/q_runner.c) end to end against qkit's scripted test
 * SMTP server (tests/smtpd, see tests/smtpd.md), on loopback only.
 *
 * Each test (each case of a table) makes its own directory (under one
 * t_tmpdir for the suite) with a qkit.conf, a spool
 * and one or more servers; submits messages through libq (linked
 * statically; the same code `qctl submit` runs), runs the built
 * `qrun --json` as a user would, and checks what a user would check: the
 * JSON summary, `qctl list/show/retry/sessions`, and what the server
 * recorded (connections, pipelining groups, messages and recipients
 * accepted, TLS handshakes, concurrent connections).
 *
 * Timeouts in the configurations are short (1-2 s) so that the faults
 * stay fast; servers run with an idle exit (-t) so that nothing can hang
 * for ever; every wait is bounded. Certificates are made once per run
 * with the openssl command (no shell).
 *
 * Concurrency at the server is computed from its record: a connection
 * counts from its "open" line to its QUIT command (or its "close" line).
 * The QUIT line is written before the 221 leaves the server, and a
 * client releases its serialization slot only after it has read the 221,
 * so a connection counted as overlapping really did overlap.
 */
#include "config.h"
#include "tlib.h"
#include "tsrv.h"
#include "q/spool.h"
#include "q/addr.h"
#include "q/util.h"
#include "q/conf.h"
#include "q/runner.h"
#include "q/retry.h"
#include "q/hints.h"

#include <CUnit/CUnit.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- a test's directory, configuration and spool ---------------------- */

struct ctx {
	char dir[PATH_MAX];
	char conf[PATH_MAX + 16];
	char spool[PATH_MAX + 16];
	char hosts[PATH_MAX + 16];
};

/* One temporary directory for the suite (tlib allows a bounded number
 * per process, shared by every suite); each test, or each case of a
 * table, gets a fresh subdirectory of it. */
static const char *suite_dir(void)
{
	static const char *d;

	if (d == NULL)
		d = t_tmpdir();
	return d;
}

static int ctx_init(struct ctx *c)
{
	static unsigned n;
	const char *base = suite_dir();
	char d[PATH_MAX];

	memset(c, 0, sizeof(*c));
	if (base == NULL)
		return -1;
	snprintf(d, sizeof(d), "%s/t%u", base, ++n);
	if (mkdir(d, 0700) < 0)
		return -1;
	snprintf(c->dir, sizeof(c->dir), "%s", d);
	snprintf(c->conf, sizeof(c->conf), "%s/qkit.conf", d);
	snprintf(c->spool, sizeof(c->spool), "%s/spool", d);
	snprintf(c->hosts, sizeof(c->hosts), "%s/hosts", d);
	return 0;
}

/* qkit.conf: the spool, short timeouts, hosts_file, then extra lines. */
static void ctx_conf(const struct ctx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void ctx_conf(const struct ctx *c, const char *fmt, ...)
{
	char extra[8192], buf[16384 + 8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(extra, sizeof(extra), fmt, ap);
	va_end(ap);
	size_t l = (size_t)snprintf(buf, sizeof(buf),
				    "spool_directory = %s\n"
				    "primary_hostname = client.test\n"
				    "hosts_file = %s\n", c->spool, c->hosts);
	/* short timeouts, unless the extra lines set their own */
	static const char *const timeouts[] = {"connect_timeout", "command_timeout",
					       "data_timeout", "final_timeout"};
	for (size_t i = 0; i < 4; i++) {
		char opt[64];
		snprintf(opt, sizeof(opt), "%s =", timeouts[i]);
		if (strstr(extra, opt) == NULL)
			l += (size_t)snprintf(buf + l, sizeof(buf) - l, "%s = 2s\n",
					      timeouts[i]);
	}
	snprintf(buf + l, sizeof(buf) - l, "%s", extra);
	CU_ASSERT_FATAL(t_write_file(c->conf, buf) == 0);
}

static void ctx_hosts(const struct ctx *c, const char *text)
{
	CU_ASSERT_FATAL(t_write_file(c->hosts, text) == 0);
}

static const char *default_body =
	"From: Sender <a@sender.test>\n"
	"Subject: qrun test\n"
	"Message-ID: <qrun-test@sender.test>\n"
	"\n"
	"Hello.\n"
	".a line that starts with a dot\n";

/* A body of about 4 KB. */
static const char *big_body(void)
{
	static char body[5000];
	size_t l;

	if (body[0])
		return body;
	l = (size_t)snprintf(body, sizeof(body),
			     "From: a@sender.test\nSubject: big\n\n");
	while (l < 4000)
		l += (size_t)snprintf(body + l, sizeof(body) - l, "%s",
				      "The quick brown fox jumps over the lazy dog.\n");
	return body;
}

/* Spool one message through an open spool: rcpts are separated by
 * spaces. 0 or -1. */
static int submit_sp(struct q_spool *sp, const char *sender, const char *rcpts,
		     const char *body, char id_r[Q_ID_LEN + 1])
{
	char *copy = strdup(rcpts), *save = NULL;
	const char *v[64];
	size_t n = 0;
	struct q_buf canon = {0};
	const char *err = NULL;
	int ret;

	if (copy == NULL)
		return -1;
	for (char *t = strtok_r(copy, " ", &save); t && n < 64;
	     t = strtok_r(NULL, " ", &save))
		v[n++] = t;
	if (body == NULL)
		body = default_body;
	ret = q_msg_canonicalize(body, strlen(body), &canon, &err);
	if (ret == 0) {
		struct q_newmsg m = {
			.sender = sender, .rcpts = v, .nrcpt = n,
			.data = canon.data, .len = canon.len,
		};
		ret = q_spool_create(sp, &m, Q_CREATE_NOSYNC, id_r, &err);
	}
	if (ret != 0)
		fprintf(stderr, "submit: %s\n", err ? err : "?");
	q_buf_free(&canon);
	free(copy);
	return ret;
}

static struct q_spool *spool_open(const struct ctx *c)
{
	struct q_spool *sp = NULL;
	const char *err = NULL;

	if (q_spool_open(c->spool, Q_SPOOL_CREATE, &sp, &err) < 0) {
		fprintf(stderr, "spool: %s\n", err);
		return NULL;
	}
	return sp;
}

static int submit(const struct ctx *c, const char *sender, const char *rcpts,
		  const char *body, char id_r[Q_ID_LEN + 1])
{
	struct q_spool *sp = spool_open(c);
	char id[Q_ID_LEN + 1];
	int ret;

	if (sp == NULL)
		return -1;
	ret = submit_sp(sp, sender, rcpts, body, id_r ? id_r : id);
	q_spool_close(&sp);
	return ret;
}

/* ---- running the programs -------------------------------------------- */

/* Run a program of ours with -C conf and NULL-terminated arguments. The
 * exit status, or -1 when it could not be run. */
static int vrun(const char *prog, const struct ctx *c, struct t_out *o, va_list ap)
{
	const char *argv[40];
	int n = 0;
	const char *a;

	memset(o, 0, sizeof(*o));
	argv[n++] = t_bin(prog);
	argv[n++] = "-C";
	argv[n++] = c->conf;
	while ((a = va_arg(ap, const char *)) != NULL && n < 39)
		argv[n++] = a;
	argv[n] = NULL;
	if (argv[0] == NULL || t_run(argv, NULL, o) != 0)
		return -1;
	return o->status;
}

static int qrun(const struct ctx *c, struct t_out *o, ...)
{
	va_list ap;
	int ret;

	va_start(ap, o);
	ret = vrun("qrun", c, o, ap);
	va_end(ap);
	if (ret != 0 && ret != 64 && ret != 77 && ret != 78)
		fprintf(stderr, "qrun exited %d: %s%s", ret, o->out ? o->out : "",
			o->err ? o->err : "");
	return ret;
}

static int qctl(const struct ctx *c, struct t_out *o, ...)
{
	va_list ap;
	int ret;

	va_start(ap, o);
	ret = vrun("qctl", c, o, ap);
	va_end(ap);
	return ret;
}

/* A number member of a one-line JSON object, -1 when absent. */
static long jnum(const char *json, const char *name)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof(key), "\"%s\":", name);
	p = json ? strstr(json, key) : NULL;
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* qrun --json with these arguments; the summary stays in *o. */
#define QRUN(c, o, ...) qrun((c), (o), "--json", __VA_ARGS__)

static long queue_count(const struct ctx *c)
{
	struct t_out o;
	long n = -1;

	if (qctl(c, &o, "list", "-c", NULL) == 0)
		n = strtol(o.out, NULL, 10);
	t_out_free(&o);
	return n;
}

/* `qctl retry --json`, malloc'd ("" on failure). */
static char *retry_json(const struct ctx *c)
{
	struct t_out o;
	char *s;

	qctl(c, &o, "retry", "--json", NULL);
	s = strdup(o.out ? o.out : "");
	t_out_free(&o);
	return s;
}

/* The kind of the record with this key in retry JSON, "" if none. */
static const char *retry_kind(const char *json, const char *key)
{
	static char kind[64];
	char pat[600];
	const char *p, *end, *k;

	kind[0] = '\0';
	snprintf(pat, sizeof(pat), "\"key\":\"%s\"", key);
	p = strstr(json, pat);
	if (p == NULL)
		return kind;
	end = strchr(p, '}');
	k = strstr(p, "\"kind\":\"");
	if (k == NULL || (end && k > end))
		return kind;
	k += 8;
	snprintf(kind, sizeof(kind), "%.*s", (int)strcspn(k, "\""), k);
	return kind;
}

static int count_str(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* Count addr in the server's accepted list: *missing when it is not
 * there, *dup when it is there more than once. */
static void tally(const char *acc, const char *addr, int *missing, int *dup)
{
	int k = count_str(acc, addr);

	*missing += k == 0;
	*dup += k > 1;
}

/* Host retry keys (T:...) in retry JSON. */
static int count_host_keys(const char *json)
{
	return count_str(json, "\"key\":\"T:");
}

/* The first message id on the queue other than not (NULL: any), or "". */
static void other_id(const struct ctx *c, const char *not, char *id)
{
	struct t_out o;

	id[0] = '\0';
	if (qctl(c, &o, "list", "-i", NULL) == 0) {
		for (char *p = o.out; p && *p;) {
			char *nl = strchr(p, '\n');
			size_t l = nl ? (size_t)(nl - p) : strlen(p);

			if (l == Q_ID_LEN && (not == NULL || strncmp(p, not, l) != 0)) {
				memcpy(id, p, l);
				id[l] = '\0';
				break;
			}
			p = nl ? nl + 1 : NULL;
		}
	}
	t_out_free(&o);
}

static char *show(const struct ctx *c, const char *id, const char *how)
{
	struct t_out o;
	char *s;

	qctl(c, &o, "show", id, how, NULL);
	s = strdup(o.out ? o.out : "");
	t_out_free(&o);
	return s;
}

/* ---- the test server ------------------------------------------------- */

struct srv {
	pid_t pid;
	char out[PATH_MAX + 32];
	char rec[PATH_MAX + 32];
	unsigned port[6];
	char stats[256];          /* its last STATS line, after srv_stop */
};

/* tests/smtpd -p PORT -t 20 -r DIR/NAME.rec [-s script] extra...; waits
 * (bounded) for READY. port 0: any free port. */
static int srv_start(struct srv *s, const struct ctx *c, const char *name,
		     unsigned port, const char *script, const char *const extra[])
{
	const char *argv[40];
	char sc[PATH_MAX + 32], ps[16], rest[256];
	int n = 0;

	memset(s, 0, sizeof(*s));
	s->pid = -1;
	snprintf(s->out, sizeof(s->out), "%s/%s.out", c->dir, name);
	snprintf(s->rec, sizeof(s->rec), "%s/%s.rec", c->dir, name);
	snprintf(ps, sizeof(ps), "%u", port);
	argv[n++] = t_bin("smtpd");
	argv[n++] = "-p";
	argv[n++] = ps;
	argv[n++] = "-t";
	argv[n++] = "20";
	argv[n++] = "-r";
	argv[n++] = s->rec;
	if (script != NULL) {
		snprintf(sc, sizeof(sc), "%s/%s.script", c->dir, name);
		if (t_write_file(sc, script) != 0)
			return -1;
		argv[n++] = "-s";
		argv[n++] = sc;
	}
	for (int i = 0; extra && extra[i] && n < 38; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	if (argv[0] == NULL)
		return -1;
	s->pid = ts_spawn(argv, NULL, s->out);
	if (s->pid <= 0)
		return -1;
	if (ts_wait_line(s->out, "READY ", 10000, rest, sizeof(rest)) != 0) {
		ts_stop(s->pid);
		s->pid = -1;
		return -1;
	}
	sscanf(rest, "%u %u %u %u %u %u", &s->port[0], &s->port[1], &s->port[2],
	       &s->port[3], &s->port[4], &s->port[5]);
	return s->port[0] ? 0 : -1;
}

static void srv_stop(struct srv *s)
{
	char *out;

	if (s->pid <= 0)
		return;
	ts_stop(s->pid);
	s->pid = -1;
	out = t_read_file(s->out, NULL);
	s->stats[0] = '\0';
	for (char *p = out; p && (p = strstr(p, "STATS ")) != NULL; p++) {
		size_t l = strcspn(p, "\n");

		snprintf(s->stats, sizeof(s->stats), "%.*s", (int)l, p);
	}
	free(out);
}

/* A counter of the STATS line ("msgs", "rcpts", "conns", "tls", ...). */
static long sstat(const struct srv *s, const char *name)
{
	char key[32];
	const char *p;

	snprintf(key, sizeof(key), " %s=", name);
	p = strstr(s->stats, key);
	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static char *rec_read(const struct srv *s)
{
	char *r = t_read_file(s->rec, NULL);

	return r ? r : strdup("");
}

/* Walk the record: fn(conn, event, rest-of-line) for each line. */
typedef void rec_fn(long conn, const char *ev, size_t evlen, const char *rest,
		    size_t restlen, void *ctx);
static void rec_walk(const char *rec, rec_fn *fn, void *ctx)
{
	for (const char *p = rec; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char *end;
		long conn = strtol(p, &end, 10);

		if (end != p && *end == ' ') {
			const char *ev = end + 1;
			size_t evlen = strcspn(ev, " \n");
			const char *rest = ev + evlen;
			size_t restlen = len - (size_t)(rest - p);

			if (restlen > 0 && *rest == ' ')
				rest++, restlen--;
			fn(conn, ev, evlen, rest, restlen, ctx);
		}
		p = nl ? nl + 1 : NULL;
	}
}

struct count_ctx {
	const char *ev;
	const char *needle;
	int n;
};

static void count_cb(long conn, const char *ev, size_t evlen, const char *rest,
		     size_t restlen, void *vctx)
{
	struct count_ctx *c = vctx;
	(void)conn;
	if (evlen != strlen(c->ev) || strncmp(ev, c->ev, evlen) != 0)
		return;
	if (c->needle != NULL && memmem(rest, restlen, c->needle,
					strlen(c->needle)) == NULL)
		return;
	c->n++;
}

/* Lines of the record with this event (and containing needle). */
static int rec_count(const struct srv *s, const char *ev, const char *needle)
{
	char *rec = rec_read(s);
	struct count_ctx c = {ev, needle, 0};

	rec_walk(rec, count_cb, &c);
	free(rec);
	return c.n;
}

/* Wait (at most ms) until the record has such a line. */
static int rec_wait(const struct srv *s, const char *ev, const char *needle, int ms)
{
	for (int waited = 0; waited <= ms; waited += 10) {
		if (rec_count(s, ev, needle) > 0)
			return 0;
		usleep(10000);
	}
	return -1;
}

#define MAXCONN 512

/* What the commands of the record say, per connection. */
struct cmd_ctx {
	long mail_g[MAXCONN];     /* group of the last MAIL */
	char last[MAXCONN][8];    /* the previous command word */
	int mails[MAXCONN];
	bool open[MAXCONN];
	int same, diff;           /* RCPT/DATA in MAIL's group, or not */
	int rset_before_mail;     /* 2nd+ MAIL right after RSET */
	int mail_not_after_rset;  /* 2nd+ MAIL without RSET before it */
	int cur, max;             /* connections open now, at most */
};

static void cmd_cb(long conn, const char *ev, size_t evlen, const char *rest,
		   size_t restlen, void *vctx)
{
	struct cmd_ctx *c = vctx;
	(void)restlen;
	if (conn <= 0 || conn >= MAXCONN)
		return;
	if (evlen == 4 && strncmp(ev, "open", 4) == 0) {
		c->open[conn] = true;
		if (++c->cur > c->max)
			c->max = c->cur;
		return;
	}
	if (evlen == 5 && strncmp(ev, "close", 5) == 0) {
		if (c->open[conn])
			c->cur--;
		c->open[conn] = false;
		return;
	}
	if (evlen != 3 || strncmp(ev, "cmd", 3) != 0 || strncmp(rest, "g=", 2) != 0)
		return;
	char *end;
	long g = strtol(rest + 2, &end, 10);
	const char *cmd = end + 1;
	char word[8];
	snprintf(word, sizeof(word), "%.*s", (int)strcspn(cmd, " :\n"), cmd);
	if (strcasecmp(word, "MAIL") == 0) {
		if (c->mails[conn] > 0) {
			if (strcasecmp(c->last[conn], "RSET") == 0)
				c->rset_before_mail++;
			else
				c->mail_not_after_rset++;
		}
		c->mails[conn]++;
		c->mail_g[conn] = g;
	} else if (strcasecmp(word, "RCPT") == 0 || strcasecmp(word, "DATA") == 0) {
		if (g == c->mail_g[conn])
			c->same++;
		else
			c->diff++;
	} else if (strcasecmp(word, "QUIT") == 0) {
		if (c->open[conn])
			c->cur--;
		c->open[conn] = false;
	}
	snprintf(c->last[conn], sizeof(c->last[conn]), "%s", word);
}

static void rec_cmds(const struct srv *s, struct cmd_ctx *c)
{
	char *rec = rec_read(s);

	memset(c, 0, sizeof(*c));
	rec_walk(rec, cmd_cb, c);
	free(rec);
}

/* Every accepted recipient of the record's msg lines (code 2xx), as
 * "<addr>" items, concatenated, malloc'd. */
struct to_ctx {
	struct q_buf b;
};

static void to_cb(long conn, const char *ev, size_t evlen, const char *rest,
		  size_t restlen, void *vctx)
{
	struct to_ctx *c = vctx;
	const char *code, *to;
	(void)conn;
	if (evlen != 3 || strncmp(ev, "msg", 3) != 0)
		return;
	code = memmem(rest, restlen, " code=2", 7);
	to = memmem(rest, restlen, " to=", 4);
	if (code == NULL || to == NULL)
		return;
	to += 4;
	q_buf_add(&c->b, to, strcspn(to, " \n"));
	q_buf_addc(&c->b, ',');
}

static char *rec_accepted(const struct srv *s)
{
	char *rec = rec_read(s);
	struct to_ctx c = {{0}};

	rec_walk(rec, to_cb, &c);
	free(rec);
	q_buf_addc(&c.b, '\0');
	return c.b.data;
}

/* ---- certificates (made once) ---------------------------------------- */

static char g_cert[PATH_MAX], g_key[PATH_MAX];    /* CN=mx.test, self-signed */
static char g_other[PATH_MAX], g_okey[PATH_MAX];  /* an unrelated CA */

static int make_cert(const char *dir, const char *name, const char *cn,
		     char *crt, char *key)
{
	char subj[128], san[128];
	struct t_out o;
	int rc;

	snprintf(crt, PATH_MAX, "%s/%s.crt", dir, name);
	snprintf(key, PATH_MAX, "%s/%s.key", dir, name);
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	snprintf(san, sizeof(san), "subjectAltName=DNS:%s", cn);
	const char *const argv[] = {"openssl", "req", "-x509", "-newkey", "ec",
				    "-pkeyopt", "ec_paramgen_curve:prime256v1",
				    "-nodes", "-days", "2", "-subj", subj,
				    "-addext", san, "-keyout", key, "-out", crt,
				    NULL};
	if (t_run(argv, NULL, &o) != 0)
		return -1;
	rc = o.status == 0 ? 0 : -1;
	if (rc)
		fprintf(stderr, "openssl req: %s", o.err);
	t_out_free(&o);
	return rc;
}

static int certs(void)
{
	static int made;

	if (made == 0) {
		const char *d = suite_dir();

		made = -1;
		if (d && make_cert(d, "mx", "mx.test", g_cert, g_key) == 0 &&
		    make_cert(d, "other", "Other Test CA", g_other, g_okey) == 0)
			made = 1;
	}
	return made == 1 ? 0 : -1;
}

/* ====================================================================== */
/* 1. N messages to several domains, all counted at the sink */

static void test_bulk(void)
{
	struct ctx c;
	struct srv s;
	const char *const ls[] = {"-l", "127.0.0.1", "-l", "127.0.0.2", "-l",
				  "127.0.0.3", NULL};
	enum { N = 200, NDOM = 6 };
	long total = 0;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "sink", 0, NULL, ls) == 0);
	ctx_hosts(&c, "127.0.0.1 mx1.test\n127.0.0.2 mx2.test\n127.0.0.3 mx3.test\n");
	/* six domains over three hosts (routes by name, by IP, and '*') */
	ctx_conf(&c,
		 "route d0.test = mx1.test:%u\n"
		 "route d1.test = mx1.test:%u\n"
		 "route d2.test = mx2.test:%u\n"
		 "route d3.test = 127.0.0.2:%u\n"
		 "route * = mx3.test:%u\n",
		 s.port[0], s.port[0], s.port[0], s.port[0], s.port[0]);

	struct q_spool *sp = spool_open(&c);
	CU_ASSERT_FATAL(sp != NULL);
	for (int i = 0; i < N; i++) {
		char rcpts[256], id[Q_ID_LEN + 1];
		size_t l = 0;
		int nr = 1 + i % 3;

		for (int j = 0; j < nr; j++)
			l += (size_t)snprintf(rcpts + l, sizeof(rcpts) - l, "%su%d.%d@d%d.test",
					      j ? " " : "", i, j, (i + j * 2) % NDOM);
		total += nr;
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", rcpts,
					  i % 10 ? default_body : big_body(), id) == 0);
	}
	q_spool_close(&sp);
	CU_ASSERT_EQUAL(queue_count(&c), N);

	struct t_out o;
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "4", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), N);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), N);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), total);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "failed"), 0);
	CU_ASSERT(jnum(o.out, "connections") >= 3);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);

	/* every recipient arrived exactly once */
	char *acc = rec_accepted(&s);
	int missing = 0, dup = 0;
	for (int i = 0; i < N; i++)
		for (int j = 0; j < 1 + i % 3; j++) {
			char a[64];
			snprintf(a, sizeof(a), "<u%d.%d@d%d.test>", i, j, (i + j * 2) % NDOM);
			tally(acc, a, &missing, &dup);
		}
	CU_ASSERT_EQUAL(missing, 0);
	CU_ASSERT_EQUAL(dup, 0);
	free(acc);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "rcpts"), total);
	/* no connection per message: messages for one host share them */
	CU_ASSERT(sstat(&s, "conns") < 20);
	CU_ASSERT_EQUAL(rec_count(&s, "sync-error", NULL), 0);
}

/* ====================================================================== */
/* 2. pipelining when advertised, and not otherwise */

static void test_pipelining(void)
{
	static const struct {
		const char *script;
		bool pipelined;
	} cases[] = {
		{NULL, true},
		{"ext 8BITMIME ENHANCEDSTATUSCODES SIZE=10000000\nsync reject\n", false},
		{"ext none\nsync reject\n", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		struct cmd_ctx cc;

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script, NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		for (int k = 0; k < 3; k++)
			CU_ASSERT_FATAL(submit(&c, "a@sender.test",
					       "x@d.test y@d.test z@e.test", NULL, NULL) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 9);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "connections"), 1);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 0);
		rec_cmds(&s, &cc);
		if (cases[i].pipelined) {
			/* MAIL, 3 RCPT and DATA in one group, 3 times */
			CU_ASSERT_EQUAL(cc.same, 12);
			CU_ASSERT_EQUAL(cc.diff, 0);
		} else {
			CU_ASSERT_EQUAL(cc.same, 0);
			CU_ASSERT_EQUAL(cc.diff, 12);
		}
		CU_ASSERT_EQUAL(rec_count(&s, "sync-error", NULL), 0);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 3);
		CU_ASSERT_EQUAL(sstat(&s, "rcpts"), 9);
	}
}

/* ====================================================================== */
/* 3. 2xx, 4xx and 5xx to the RCPTs of one transaction */

static void test_rcpt_mixed(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1], bid[Q_ID_LEN + 1], key[128];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "rcpt 2: 450 4.2.0 mailbox busy, try later\n"
				  "rcpt 3: 550 5.1.1 no such user\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "ok@d.test later@d.test bad@d.test",
			       NULL, id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "failed"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 0);
	t_out_free(&o);

	/* the server took the 2xx one only, in one transaction */
	char *acc = rec_accepted(&s);
	CU_ASSERT_STRING_EQUAL(acc, "<ok@d.test>,");
	free(acc);

	/* the message: one of each */
	char *js = show(&c, id, "--json");
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "{\"address\":\"ok@d.test\",\"state\":\"delivered\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "{\"address\":\"later@d.test\",\"state\":\"pending\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "{\"address\":\"bad@d.test\",\"state\":\"failed\""));
	free(js);

	/* the 4xx one: an address retry key "<addr>:<id>", no host key */
	char *rj = retry_json(&c);
	snprintf(key, sizeof(key), "later@d.test:%s", id);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "rcpt_4xx");
	CU_ASSERT_EQUAL(count_host_keys(rj), 0);
	CU_ASSERT_PTR_NULL(strstr(rj, "bad@d.test"));
	free(rj);

	/* the 5xx one: a bounce to the sender, from <> */
	CU_ASSERT_EQUAL(queue_count(&c), 2);
	other_id(&c, id, bid);
	CU_ASSERT_FATAL(bid[0] != '\0');
	js = show(&c, bid, "--json");
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"sender\":\"\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"bounce\":true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"recipients\":[{\"address\":\"a@sender.test\""));
	free(js);
	char *hd = show(&c, bid, "--headers");
	CU_ASSERT_PTR_NOT_NULL(strstr(hd, "multipart/report"));
	CU_ASSERT_PTR_NOT_NULL(strstr(hd, "report-type=delivery-status"));
	CU_ASSERT_PTR_NOT_NULL(strstr(hd, "To: <a@sender.test>"));
	free(hd);
	char *body = show(&c, bid, "--body");
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Content-Type: message/delivery-status"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Final-Recipient: rfc822; bad@d.test"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Status: 5.1.1"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Action: failed"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "550 5.1.1 no such user"));
	/* only the failed one is reported; the original header is there */
	CU_ASSERT_EQUAL(count_str(body, "Final-Recipient:"), 1);
	CU_ASSERT_PTR_NULL(strstr(body, "later@d.test"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Subject: qrun test"));
	free(body);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
}

/* ====================================================================== */
/* 4. disconnect mid-DATA, then a healthy run delivers once */

static void test_mid_data(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1], key[128];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "conn 1\nbody 1000: drop\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test y@d.test", big_body(),
			       id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 2);
	CU_ASSERT_EQUAL(jnum(o.out, "failed"), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 1);
	CU_ASSERT_EQUAL(rec_count(&s, "close", "reason=script-drop"), 1);
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 1);

	char *js = show(&c, id, "--json");
	CU_ASSERT_EQUAL(count_str(js, "\"state\":\"pending\""), 2);
	free(js);
	char *rj = retry_json(&c);
	snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port[0]);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "lost_connection");
	free(rj);

	/* not due yet: a plain run leaves it */
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 1);

	/* the server is healthy now (connection 2 on): -f delivers it once */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-f", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 2);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 0);
	free(rj);
	char *acc = rec_accepted(&s);
	CU_ASSERT_STRING_EQUAL(acc, "<x@d.test>,<y@d.test>,");
	free(acc);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
	CU_ASSERT_EQUAL(sstat(&s, "conns"), 2);
}

/* ====================================================================== */
/* 5. a server that stalls past the timeouts */

static void test_stall(void)
{
	static const struct {
		const char *script;
		const char *kind;
	} cases[] = {
		{"mail: stall\n", "timeout"},       /* command_timeout */
		{"banner: stall\n", "timeout"},     /* the greeting never comes */
		{"dot: stall\n", "timeout"},        /* final_timeout, data sent */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		struct timespec t0, t1;
		char key[128];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script, NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n"
			 "command_timeout = 1s\nfinal_timeout = 1s\n", s.port[0]);
		for (int k = 0; k < 3; k++)
			CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "2", NULL), 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double secs = (double)(t1.tv_sec - t0.tv_sec) +
			      (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 3);
		t_out_free(&o);
		/* one stalled connection marks the host: the other messages
		   are deferred without waiting again */
		CU_ASSERT(secs < 8.0);
		CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 1);
		if (rec_count(&s, "open", NULL) != 1 || secs >= 8.0)
			fprintf(stderr, "case %zu: %d connections, %.1f s\n", i,
				rec_count(&s, "open", NULL), secs);
		CU_ASSERT_EQUAL(queue_count(&c), 3);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port[0]);
		CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), cases[i].kind);
		free(rj);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 0);
	}
}

/* ====================================================================== */
/* 6. malformed replies */

static void test_malformed(void)
{
	static const char *const scripts[] = {
		"ehlo: 250-mx.test\\n251 PIPELINING\n",       /* mixed codes */
		"mail: 250-2.1.0 Ok\\n550 5.1.0 no\n",        /* mixed codes */
		"rcpt: 25 ok\n",                              /* two digits */
		"banner: 220-mx.test\\n2x0 hello\n",          /* bad code */
		"mail: longline 3000\n",                      /* overlong line */
		"dot: 250-2.0.0 queued\\n451 4.3.0 or not\n", /* after the data */
	};

	for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char key[128];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, scripts[i], NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "y@d.test", NULL, NULL) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 2);
		CU_ASSERT_EQUAL(jnum(o.out, "failed"), 0);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 2);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port[0]);
		CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "protocol");
		if (strcmp(retry_kind(rj, key), "protocol") != 0)
			fprintf(stderr, "script %s: retry %s\n", scripts[i], rj);
		free(rj);
		srv_stop(&s);
	}
}

/* ====================================================================== */
/* 7. STARTTLS not offered or refused, with and without hosts_require_tls */

static void test_starttls_refused(void)
{
	static const struct {
		const char *script;
		bool require;
	} cases[] = {
		{"ext -STARTTLS\n", false},
		{"starttls: 454 4.7.0 TLS not available\n", false},
		{"ext -STARTTLS\n", true},
		{"starttls: 454 4.7.0 TLS not available\n", true},
	};

	CU_ASSERT_FATAL(certs() == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char key[128];
		const char *const tls[] = {"-c", g_cert, "-k", g_key, NULL};

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script, tls) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n%s", s.port[0],
			 cases[i].require ? "hosts_require_tls = *\n" : "");
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "y@d.test", NULL, NULL) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "tls"), 0);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port[0]);
		if (cases[i].require) {
			CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
			CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 2);
			CU_ASSERT_EQUAL(queue_count(&c), 2);
			CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "tls_required");
		} else {
			CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 2);
			CU_ASSERT_EQUAL(queue_count(&c), 0);
			CU_ASSERT_EQUAL(count_host_keys(rj), 0);
		}
		free(rj);
		t_out_free(&o);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "tls"), 0);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), cases[i].require ? 0 : 2);
		/* nothing was sent in clear when TLS was required */
		if (cases[i].require)
			CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM"), 0);
	}
}

/* ====================================================================== */
/* 8. a certificate that fails verification */

static void test_verify_fails(void)
{
	static const struct {
		const char *name;      /* the host name routed to */
		bool other_ca;
		bool ok;
	} cases[] = {
		{"mx.test", false, true},      /* the control: it verifies */
		{"mx.test", true, false},      /* signed by another CA */
		{"other.test", false, false},  /* the name does not match */
	};

	CU_ASSERT_FATAL(certs() == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char key[128], hosts[128];
		const char *const tls[] = {"-c", g_cert, "-k", g_key, NULL};

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, tls) == 0);
		snprintf(hosts, sizeof(hosts), "127.0.0.1 %s\n", cases[i].name);
		ctx_hosts(&c, hosts);
		ctx_conf(&c, "route * = %s:%u\ntls_verify_certificates = %s\n",
			 cases[i].name, s.port[0], cases[i].other_ca ? g_other : g_cert);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "T:%s:127.0.0.1:%u", cases[i].name, s.port[0]);
		if (cases[i].ok) {
			CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
			CU_ASSERT_EQUAL(jnum(o.out, "tls"), 1);
			CU_ASSERT_EQUAL(count_host_keys(rj), 0);
		} else {
			CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
			CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
			CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "tls_required");
			CU_ASSERT_EQUAL(queue_count(&c), 1);
		}
		free(rj);
		t_out_free(&o);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), cases[i].ok ? 1 : 0);
		/* never fell back to clear text */
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM"), cases[i].ok ? 1 : 0);
	}
}

/* ====================================================================== */
/* 9. two IPs of one host, one refusing: per-IP retry records */

static void test_two_ips(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char key[128];
	const char *const ls[] = {"-l", "127.0.0.2,refuse", "-l", "127.0.0.3", NULL};

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, ls) == 0);
	CU_ASSERT_EQUAL(s.port[0], s.port[1]);
	ctx_hosts(&c, "127.0.0.2 mx.test\n127.0.0.3 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	for (int k = 0; k < 3; k++)
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test y@e.test", NULL,
				       NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 6);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	CU_ASSERT(rec_count(&s, "open", "local=127.0.0.3:") >= 1);
	CU_ASSERT_EQUAL(rec_count(&s, "open", "local=127.0.0.2:"), 0);

	char *rj = retry_json(&c);
	snprintf(key, sizeof(key), "T:mx.test:127.0.0.2:%u", s.port[0]);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "refused");
	snprintf(key, sizeof(key), "T:mx.test:127.0.0.3:%u", s.port[0]);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "");
	CU_ASSERT_EQUAL(count_host_keys(rj), 1);
	free(rj);

	/* the next run skips the refusing IP (its retry time has not come)
	   and the record stays as it was */
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "z@d.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 1);
	free(rj);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 4);
}

/* ====================================================================== */
/* 10. fallback_hosts only after every primary failed */

static void test_fallback(void)
{
	struct ctx c;
	struct srv prim, fb;
	struct t_out o;
	const char *const ls[] = {"-l", "127.0.0.2,refuse", "-l", "127.0.0.3,refuse", NULL};

	/* primaries refusing: one copy per message at the fallback */
	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&prim, &c, "prim", 0, NULL, ls) == 0);
	CU_ASSERT_FATAL(srv_start(&fb, &c, "fb", 0, NULL, NULL) == 0);
	ctx_hosts(&c, "127.0.0.2 mx1.test\n127.0.0.3 mx2.test\n127.0.0.1 fb.test\n");
	ctx_conf(&c, "route d1.test = mx1.test:%u\nroute d2.test = mx2.test:%u\n"
		 "fallback_hosts = fb.test:%u\n",
		 prim.port[0], prim.port[0], fb.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "a@d1.test b@d1.test c@d2.test",
			       NULL, NULL) == 0);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d2.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "2", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 4);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 2);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	char *acc = rec_accepted(&fb);
	CU_ASSERT_EQUAL(count_str(acc, "<a@d1.test>,"), 1);
	CU_ASSERT_EQUAL(count_str(acc, "<b@d1.test>,"), 1);
	CU_ASSERT_EQUAL(count_str(acc, "<c@d2.test>,"), 1);
	CU_ASSERT_EQUAL(count_str(acc, "<x@d2.test>,"), 1);
	free(acc);
	/* the primaries have their records; the fallback none */
	char *rj = retry_json(&c);
	char key[128];
	snprintf(key, sizeof(key), "T:mx1.test:127.0.0.2:%u", prim.port[0]);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "refused");
	snprintf(key, sizeof(key), "T:mx2.test:127.0.0.3:%u", prim.port[0]);
	CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "refused");
	CU_ASSERT_EQUAL(count_host_keys(rj), 2);
	free(rj);
	srv_stop(&fb);
	srv_stop(&prim);
	CU_ASSERT_EQUAL(sstat(&fb, "msgs"), 2);
	CU_ASSERT_EQUAL(sstat(&fb, "rcpts"), 4);

	/* a working primary: the fallback sees nothing */
	struct ctx c2;
	CU_ASSERT_FATAL(ctx_init(&c2) == 0);
	CU_ASSERT_FATAL(srv_start(&prim, &c2, "prim", 0, NULL, NULL) == 0);
	CU_ASSERT_FATAL(srv_start(&fb, &c2, "fb", 0, NULL, NULL) == 0);
	ctx_hosts(&c2, "127.0.0.1 mx1.test fb.test\n");
	ctx_conf(&c2, "route * = mx1.test:%u\nfallback_hosts = fb.test:%u\n",
		 prim.port[0], fb.port[0]);
	CU_ASSERT_FATAL(submit(&c2, "a@sender.test", "a@d1.test b@d2.test", NULL, NULL) == 0);
	CU_ASSERT_FATAL(submit(&c2, "a@sender.test", "x@d2.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c2, &o, "-P", "2", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 3);
	t_out_free(&o);
	srv_stop(&fb);
	srv_stop(&prim);
	CU_ASSERT_EQUAL(sstat(&prim, "rcpts"), 3);
	CU_ASSERT_EQUAL(sstat(&fb, "conns"), 0);
}

/* ====================================================================== */
/* 11. hosts_max_try */

static void test_hosts_max_try(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	const char *const ls[] = {"-l", "127.0.0.2", "-l", "127.0.0.3", "-l", "127.0.0.4",
				  "-l", "127.0.0.5", NULL};

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	/* every IP greets with 421 and hangs up */
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "banner: 421 4.3.2 too busy; close\n", ls) == 0);
	ctx_hosts(&c, "127.0.0.2 mx.test\n127.0.0.3 mx.test\n"
		  "127.0.0.4 mx.test\n127.0.0.5 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nhosts_max_try = 2\n", s.port[0]);
	for (int k = 0; k < 3; k++)
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "2", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 3);
	t_out_free(&o);
	/* two connection attempts in all, to the first two IPs */
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 2);
	CU_ASSERT_EQUAL(rec_count(&s, "open", "local=127.0.0.2:"), 1);
	CU_ASSERT_EQUAL(rec_count(&s, "open", "local=127.0.0.3:"), 1);
	char *rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 2);
	free(rj);

	/* a new message in the next run: the two IPs with records are
	   skipped (their retry time has not come) and do not count: the
	   other two are tried (the three old messages are not due) */
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "y@d.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 4);
	CU_ASSERT_EQUAL(rec_count(&s, "open", "local=127.0.0.4:"), 1);
	CU_ASSERT_EQUAL(rec_count(&s, "open", "local=127.0.0.5:"), 1);
	rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 4);
	free(rj);
	srv_stop(&s);
}

/* ====================================================================== */
/* 12. batch_max, with one TLS handshake per connection */

static void test_batch_tls(void)
{
	static const struct {
		const char *batch;
		int conns;
	} cases[] = {
		{"0", 1},
		{"100", 1},
		{"3", 4},
	};

	CU_ASSERT_FATAL(certs() == 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		struct cmd_ctx cc;
		const char *const tls[] = {"-c", g_cert, "-k", g_key, NULL};

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, tls) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\nbatch_max = %s\n"
			 "tls_verify_certificates = %s\n",
			 s.port[0], cases[i].batch, g_cert);
		for (int k = 0; k < 10; k++) {
			char r[64];
			snprintf(r, sizeof(r), "u%d@d%d.test", k, k % 3);
			CU_ASSERT_FATAL(submit(&c, "a@sender.test", r, NULL, NULL) == 0);
		}
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 10);
		CU_ASSERT_EQUAL(jnum(o.out, "connections"), cases[i].conns);
		CU_ASSERT_EQUAL(jnum(o.out, "tls"), cases[i].conns);
		/* later connections resume the TLS session */
		CU_ASSERT_EQUAL(jnum(o.out, "tls_resumed"), cases[i].conns - 1);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 0);
		rec_cmds(&s, &cc);
		/* each message after the first on a connection: RSET, MAIL */
		CU_ASSERT_EQUAL(cc.rset_before_mail, 10 - cases[i].conns);
		CU_ASSERT_EQUAL(cc.mail_not_after_rset, 0);
		/* and every one of them inside TLS: no MAIL before the
		   handshake (STARTTLS, then EHLO again) */
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "STARTTLS"), cases[i].conns);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "conns"), cases[i].conns);
		CU_ASSERT_EQUAL(sstat(&s, "tls"), cases[i].conns);
		CU_ASSERT_EQUAL(sstat(&s, "resumed"), cases[i].conns - 1);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 10);
		if (strcmp(cases[i].batch, "3") == 0) {
			CU_ASSERT_EQUAL(rec_count(&s, "close", "msgs=3 "), 3);
			CU_ASSERT_EQUAL(rec_count(&s, "close", "msgs=1 "), 1);
		}
	}
}

/* ====================================================================== */
/* a run in the background, against a slow server */

struct bg {
	pid_t pid;
	char out[PATH_MAX + 32];
};

static int bg_qrun(struct bg *b, const struct ctx *c, const char *extra)
{
	static int n;
	const char *argv[] = {t_bin("qrun"), "-C", c->conf, "--json", extra, NULL};

	snprintf(b->out, sizeof(b->out), "%s/bg%d.out", c->dir, ++n);
	b->pid = ts_spawn(argv, NULL, b->out);
	return b->pid > 0 ? 0 : -1;
}

/* Wait (at most ms) for it to exit; its status, or -1 (then killed). */
static int bg_wait(struct bg *b, int ms)
{
	int st;

	for (int waited = 0; waited <= ms; waited += 10) {
		pid_t r = waitpid(b->pid, &st, WNOHANG);

		if (r == b->pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(10000);
	}
	ts_stop(b->pid);
	return -1;
}

/* ====================================================================== */
/* 13. serialize_hosts never exceeded with -P 8 */

static void test_serialize(void)
{
	static const struct {
		const char *conf;
		int max;                /* at most this many at once */
		int min;                /* at least this many (the control) */
	} cases[] = {
		{"", 8, 2},
		{"serialize_hosts = mx.test\n", 1, 1},
		{"serialize_hosts = mx.test\nserialize_max = 2\n", 2, 1},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		struct cmd_ctx cc;

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		/* a slow end of data, so that connections would overlap */
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, "dot: delay 20\n", NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\nbatch_max = 5\n%s", s.port[0],
			 cases[i].conf);
		struct q_spool *sp = spool_open(&c);
		CU_ASSERT_FATAL(sp != NULL);
		for (int k = 0; k < 40; k++) {
			char r[64], id[Q_ID_LEN + 1];
			snprintf(r, sizeof(r), "u%d@d%d.test", k, k % 8);
			CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", r, NULL, id) == 0);
		}
		q_spool_close(&sp);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "8", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 40);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 0);
		rec_cmds(&s, &cc);
		CU_ASSERT(cc.max <= cases[i].max);
		CU_ASSERT(cc.max >= cases[i].min);
		if (cc.max > cases[i].max || cc.max < cases[i].min)
			fprintf(stderr, "serialize case %zu: %d at once\n", i, cc.max);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 40);
		/* batch_max 5: 8 connections at least */
		CU_ASSERT(sstat(&s, "conns") >= 8);
	}
}

/* Two runs at once (two processes, -P 8 each) share the serialization
 * slots of the hints: still one connection at a time; a third run
 * delivers what they left, and nothing is sent twice or to the fallback. */
static void test_serialize_two_runs(void)
{
	struct ctx c;
	struct srv s, fb;
	struct t_out o;
	struct cmd_ctx cc;
	struct bg b;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, "dot: delay 20\n", NULL) == 0);
	CU_ASSERT_FATAL(srv_start(&fb, &c, "fb", 0, NULL, NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test fb.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nbatch_max = 5\nqueue_run_max = 2\n"
		 "serialize_hosts = mx.test\nfallback_hosts = fb.test:%u\n",
		 s.port[0], fb.port[0]);
	struct q_spool *sp = spool_open(&c);
	CU_ASSERT_FATAL(sp != NULL);
	for (int k = 0; k < 40; k++) {
		char r[64], id[Q_ID_LEN + 1];
		snprintf(r, sizeof(r), "u%d@d%d.test", k, k % 8);
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", r, NULL, id) == 0);
	}
	q_spool_close(&sp);
	CU_ASSERT_FATAL(bg_qrun(&b, &c, "-P8") == 0);
	CU_ASSERT_FATAL(rec_wait(&s, "open", NULL, 10000) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "8", NULL), 0);
	long second = jnum(o.out, "delivered");
	t_out_free(&o);
	CU_ASSERT_EQUAL(bg_wait(&b, 30000), 0);
	char *out = t_read_file(b.out, NULL);
	long first = jnum(out, "delivered");
	free(out);
	CU_ASSERT(first > 0);
	/* what the second run left (serialized) or found busy is due now */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "8", NULL), 0);
	long third = jnum(o.out, "delivered");
	t_out_free(&o);
	CU_ASSERT_EQUAL(first + second + third, 40);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	rec_cmds(&s, &cc);
	CU_ASSERT_EQUAL(cc.max, 1);
	char *acc = rec_accepted(&s);
	int dup = 0;
	for (int k = 0; k < 40; k++) {
		char a[64];
		snprintf(a, sizeof(a), "<u%d@d%d.test>", k, k % 8);
		dup += count_str(acc, a) != 1;
	}
	CU_ASSERT_EQUAL(dup, 0);
	free(acc);
	/* a busy serialized host is no failure: no retry record, no fallback */
	char *rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 0);
	free(rj);
	srv_stop(&s);
	srv_stop(&fb);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 40);
	CU_ASSERT_EQUAL(sstat(&fb, "conns"), 0);
}

/* A runner killed (SIGKILL) in the middle of a delivery: its session and
 * its serialization slot die with it, and the next run delivers. */
static void test_killed_runner(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	struct bg b;
	char id[Q_ID_LEN + 1], want[64];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "conn 1\ndot: delay 10000\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nserialize_hosts = *\n"
		 "final_timeout = 30s\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, id) == 0);
	CU_ASSERT_FATAL(bg_qrun(&b, &c, NULL) == 0);
	CU_ASSERT_FATAL(rec_wait(&s, "msg", NULL, 10000) == 0);
	snprintf(want, sizeof(want), "\"pid\":%ld", (long)b.pid);
	CU_ASSERT_EQUAL(qctl(&c, &o, "sessions", "--json", NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out ? o.out : "", want));
	t_out_free(&o);
	kill(b.pid, SIGKILL);
	CU_ASSERT_EQUAL(bg_wait(&b, 5000), 128 + SIGKILL);
	/* the dead runner's session is not shown */
	CU_ASSERT_EQUAL(qctl(&c, &o, "sessions", "--json", NULL), 0);
	CU_ASSERT_PTR_NULL(strstr(o.out ? o.out : "", want));
	t_out_free(&o);
	/* its slot is stale (dead pid): the next run takes it and delivers
	   (again: the server had accepted it, and SMTP cannot tell) */
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "connections"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "conns"), 2);
}

/* ====================================================================== */
/* 14. one bounce for a 5xx; none for a message from <> */

static void test_bounce(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1], bid[Q_ID_LEN + 1], nid[Q_ID_LEN + 1];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "rcpt: 550 5.1.1 <x> no such user\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	/* the bounce goes back through the same server, which refuses it */
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "nobody@d.test", NULL, id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "failed"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 1);
	t_out_free(&o);
	/* the message is gone; exactly one bounce is queued, from <> to the
	   sender */
	CU_ASSERT_EQUAL(queue_count(&c), 1);
	other_id(&c, id, bid);
	CU_ASSERT_FATAL(bid[0] != '\0');
	char *js = show(&c, bid, "--json");
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"sender\":\"\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"bounce\":true"));
	CU_ASSERT_EQUAL(count_str(js, "\"address\":"), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"address\":\"a@sender.test\""));
	free(js);
	char *body = show(&c, bid, "--body");
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Final-Recipient: rfc822; nobody@d.test"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "Status: 5.1.1"));
	free(body);

	/* a message from <> that fails, and the bounce itself (refused by
	   the same server): no bounce of a bounce */
	CU_ASSERT_FATAL(submit(&c, "", "nobody2@d.test", NULL, nid) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 2);
	CU_ASSERT_EQUAL(jnum(o.out, "failed"), 2);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 2);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	/* the bounce went out with MAIL FROM:<> */
	CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM:<> "), 2);
	srv_stop(&s);
}

/* 14b. what the bounce says for a refused MAIL and for a domain under
   .invalid, from real runs (the texts the runner and client store) */

static void test_bounce_fields(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1], bid[Q_ID_LEN + 1];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "mail: 550 5.7.1 sender rejected\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "nobody@d.test", NULL, id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 1);
	t_out_free(&o);
	other_id(&c, id, bid);
	CU_ASSERT_FATAL(bid[0] != '\0');
	char *body = show(&c, bid, "--body");
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "\nStatus: 5.7.1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body,
		"\nDiagnostic-Code: smtp; 550 5.7.1 sender rejected\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "MAIL FROM refused: 550 5.7.1 sender rejected\n"));
	free(body);
	srv_stop(&s);

	/* a domain that cannot exist: no attempt, 5.1.2, no Remote-MTA */
	char id2[Q_ID_LEN + 1], bid2[Q_ID_LEN + 1];
	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	ctx_hosts(&c, "");
	ctx_conf(&c, "%s", "");
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@nowhere.invalid", NULL, id2) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 1);
	t_out_free(&o);
	other_id(&c, id2, bid2);
	CU_ASSERT_FATAL(bid2[0] != '\0');
	body = show(&c, bid2, "--body");
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "\nStatus: 5.1.2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(body, "\nDiagnostic-Code: X-qkit; "));
	CU_ASSERT_PTR_NULL(strstr(body, "Remote-MTA:"));
	free(body);
}

/* ====================================================================== */
/* exit codes, -M, -R, -f */

static void test_exit_codes(void)
{
	struct ctx c;
	struct t_out o;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	/* a configuration error: 78, one line naming the file and line */
	ctx_conf(&c, "no_such_option = 1\n");
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 78);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err ? o.err : "", "qkit.conf:"));
	CU_ASSERT_EQUAL(count_str(o.err ? o.err : "", "\n"), 1);
	CU_ASSERT_EQUAL(o.outlen, 0);
	t_out_free(&o);
	ctx_conf(&c, "route * = 127.0.0.1:%u\nbatch_max = banana\n", 25u);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 78);
	t_out_free(&o);
	/* usage */
	ctx_conf(&c, "route * = 127.0.0.1:25\n");
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "0", NULL), 64);
	t_out_free(&o);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-M", NULL), 64);
	t_out_free(&o);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-M", "not-an-id", NULL), 64);
	t_out_free(&o);

	/* nothing set up but the configuration (a crontab line on a fresh
	   machine): the spool is made, 0, and quiet without -v and --json */
	struct stat sb;
	CU_ASSERT_EQUAL(stat(c.spool, &sb), -1);
	CU_ASSERT_EQUAL(qrun(&c, &o, "-q", NULL), 0);
	CU_ASSERT_EQUAL(o.outlen, 0);
	CU_ASSERT_EQUAL(o.errlen, 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(stat(c.spool, &sb), 0);
	CU_ASSERT_EQUAL(sb.st_mode & 0777, 0700);

	/* a spool open to others: the run cannot work, 77, one line */
	CU_ASSERT_FATAL(chmod(c.spool, 0777) == 0);
	CU_ASSERT_EQUAL(qrun(&c, &o, NULL), 77);
	CU_ASSERT_EQUAL(count_str(o.err ? o.err : "", "\n"), 1);
	t_out_free(&o);
	CU_ASSERT_FATAL(chmod(c.spool, 0700) == 0);

	/* deferrals are normal: 0 (a port where nothing listens) */
	unsigned port = ts_free_port();
	ctx_conf(&c, "route * = 127.0.0.1:%u\n", port);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(qrun(&c, &o, "-f", NULL), 0);
	CU_ASSERT_EQUAL(o.outlen, 0);
	CU_ASSERT_EQUAL(o.errlen, 0);
	t_out_free(&o);
}

static void test_select(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[3][Q_ID_LEN + 1];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "m0@a.test", NULL, id[0]) == 0);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "m1@b.test", NULL, id[1]) == 0);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "m2@c.test", NULL, id[2]) == 0);

	/* -M ID: that one only */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-M", id[1], NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 2);
	char *acc = rec_accepted(&s);
	CU_ASSERT_STRING_EQUAL(acc, "<m1@b.test>,");
	free(acc);

	/* -R DOMAIN: messages with a recipient there only */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-R", "C.test", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	acc = rec_accepted(&s);
	CU_ASSERT_STRING_EQUAL(acc, "<m1@b.test>,<m2@c.test>,");
	free(acc);
	CU_ASSERT_EQUAL(queue_count(&c), 1);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-R", "nowhere.test", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 1);

	/* -M of a message that is not there: nothing, still 0 */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-M", id[1], NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 0);
	t_out_free(&o);
	srv_stop(&s);
}

static void test_force(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	/* the first connection defers the recipient; later ones take it */
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "conn 1\nrcpt: 451 4.3.0 not now\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 1);
	/* without -f: not due, not tried */
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "messages"), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "connections"), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), 1);
	CU_ASSERT_EQUAL(queue_count(&c), 1);
	/* with -f: at once */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-f", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	/* the address retry record went with the success */
	char *rj = retry_json(&c);
	CU_ASSERT_PTR_NULL(strstr(rj, "x@d.test:"));
	free(rj);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
}

static void test_queue_run_max(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	struct bg b;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, "dot: delay 1500\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nqueue_run_max = 1\nfinal_timeout = 10s\n",
		 s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
	CU_ASSERT_FATAL(bg_qrun(&b, &c, NULL) == 0);
	CU_ASSERT_FATAL(rec_wait(&s, "msg", NULL, 10000) == 0);
	/* the first run is in its data phase: a second one says so in one
	   line and exits 0 */
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "y@d.test", NULL, NULL) == 0);
	CU_ASSERT_EQUAL(qrun(&c, &o, "-v", NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err ? o.err : "", "queue_run_max"));
	CU_ASSERT_EQUAL(count_str(o.err ? o.err : "", "\n"), 1);
	CU_ASSERT_EQUAL(o.outlen, 0);
	t_out_free(&o);
	/* quiet without -v */
	CU_ASSERT_EQUAL(qrun(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(o.outlen, 0);
	t_out_free(&o);
	/* -M does not count towards queue_run_max */
	CU_ASSERT_EQUAL(bg_wait(&b, 15000), 0);
	char *out = t_read_file(b.out, NULL);
	CU_ASSERT_EQUAL(jnum(out, "delivered"), 1);
	free(out);
	/* the lock is free again */
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 2);
}

static void test_sessions(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	struct bg b;
	char id[Q_ID_LEN + 1], want[128];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, "dot: delay 3000\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nfinal_timeout = 10s\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, id) == 0);
	CU_ASSERT_FATAL(bg_qrun(&b, &c, NULL) == 0);
	CU_ASSERT_FATAL(rec_wait(&s, "msg", NULL, 10000) == 0);

	/* while the server sits on the final dot (per-message states are
	   written at most every 200 ms: wait a little for this one) */
	snprintf(want, sizeof(want), "\"%s\"", id);
	for (int i = 0; i < 100; i++) {
		CU_ASSERT_EQUAL(qctl(&c, &o, "sessions", "--json", NULL), 0);
		if (o.out && strstr(o.out, want))
			break;
		t_out_free(&o);
		usleep(20000);
	}
	const char *js = o.out ? o.out : "";
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"host\":\"mx.test\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(js, "\"ip\":\"127.0.0.1\""));
	snprintf(want, sizeof(want), "\"port\":%u", s.port[0]);
	CU_ASSERT_PTR_NOT_NULL(strstr(js, want));
	CU_ASSERT(strstr(js, "\"state\":\"mail\"") || strstr(js, "\"state\":\"data\"") ||
		  strstr(js, "\"state\":\"dot\""));
	snprintf(want, sizeof(want), "\"%s\"", id);
	CU_ASSERT_PTR_NOT_NULL(strstr(js, want));
	snprintf(want, sizeof(want), "\"pid\":%ld", (long)b.pid);
	CU_ASSERT_PTR_NOT_NULL(strstr(js, want));
	if (strstr(js, "mx.test") == NULL || strstr(js, want) == NULL ||
	    strstr(js, "\"state\":\"mail\"") == NULL)
		fprintf(stderr, "sessions: %s\n", js);
	t_out_free(&o);
	CU_ASSERT_EQUAL(qctl(&c, &o, "sessions", NULL), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out ? o.out : "", "mx.test"));
	t_out_free(&o);

	CU_ASSERT_EQUAL(bg_wait(&b, 15000), 0);
	/* gone after */
	CU_ASSERT_EQUAL(qctl(&c, &o, "sessions", "--json", NULL), 0);
	CU_ASSERT_PTR_NULL(strstr(o.out ? o.out : "", "mx.test"));
	t_out_free(&o);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
}

/* Handoff when the server does not want more: it hangs up after each
 * message, or refuses RSET. Every message is sent once, each on a new
 * connection, and the host is not marked as failing. */
static void test_handoff_refused(void)
{
	static const char *const scripts[] = {
		"dot: default; close\n",
		"rset: 421 4.3.2 one message per connection; close\n",
		"rset: 502 5.5.1 no RSET here\n",
	};

	for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, scripts[i], NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		for (int k = 0; k < 5; k++) {
			char r[32];
			snprintf(r, sizeof(r), "u%d@d.test", k);
			CU_ASSERT_FATAL(submit(&c, "a@sender.test", r, NULL, NULL) == 0);
		}
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 5);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "connections"), 5);
		if (jnum(o.out, "delivered") != 5)
			fprintf(stderr, "script %s: %s\n", scripts[i], o.out);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 0);
		char *rj = retry_json(&c);
		CU_ASSERT_EQUAL(count_host_keys(rj), 0);
		free(rj);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 5);
		CU_ASSERT_EQUAL(sstat(&s, "conns"), 5);
	}
}

/* Past the retry rule's final cutoff (Exim's semantics): the host's
 * record is made in the past through libq, then one run. */
static void test_cutoff(void)
{
	static const struct {
		int seeds[2];           /* failures, seconds ago (0: none) */
		bool delay_after_cutoff;
		int opens;              /* connection attempts */
		bool bounce;
	} cases[] = {
		/* due, not yet expired: tried, and this failure is past the
		   cutoff: the address bounces */
		{{3 * 3600, 0}, true, 1, true},
		/* expired and not due: bounced without an attempt */
		{{3 * 3600, 10}, true, 0, true},
		/* the same with delay_after_cutoff = false: the message came
		   after the last try, so one attempt first */
		{{3 * 3600, 10}, false, 1, true},
		/* not due, not expired: deferred without an attempt */
		{{60, 0}, true, 0, false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char key[128];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
					  "banner: 421 4.3.2 busy; close\n", NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\nretry * * F,1s,2h\n"
			 "delay_after_cutoff = %s\n", s.port[0],
			 cases[i].delay_after_cutoff ? "true" : "false");
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);

		/* the record, as earlier runs would have left it */
		struct q_spool *sp = spool_open(&c);
		struct q_hints *h = NULL;
		struct q_retry_rule rule = {0};
		const char *err = NULL;
		CU_ASSERT_FATAL(sp != NULL);
		CU_ASSERT_FATAL(q_spool_hints(sp, &h, &err) == 0);
		CU_ASSERT_FATAL(q_retry_parse_algos("F,1s,2h", &rule, &err) == 0);
		snprintf(key, sizeof(key), "T:mx.test:127.0.0.1:%u", s.port[0]);
		for (int k = 0; k < 2 && cases[i].seeds[k]; k++)
			CU_ASSERT_FATAL(q_retry_fail(h, key, &rule, 0, "banner", 421, 0,
						     "421 4.3.2 busy (seeded)",
						     time(NULL) - cases[i].seeds[k],
						     NULL, &err) == 0);
		q_retry_rule_clear(&rule);
		q_spool_close(&sp);

		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "failed"), cases[i].bounce ? 1 : 0);
		CU_ASSERT_EQUAL(jnum(o.out, "bounces"), cases[i].bounce ? 1 : 0);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), cases[i].bounce ? 0 : 1);
		if (jnum(o.out, "failed") != (cases[i].bounce ? 1 : 0))
			fprintf(stderr, "cutoff case %zu: %s\n", i, o.out);
		t_out_free(&o);
		CU_ASSERT_EQUAL(rec_count(&s, "open", NULL), cases[i].opens);
		/* bounced: the message is gone, its bounce is queued */
		CU_ASSERT_EQUAL(queue_count(&c), 1);
		srv_stop(&s);
	}
}

/* A number member of the retry record with this key, -1 when absent. */
static long retry_num(const char *json, const char *key, const char *member)
{
	char pat[600];
	const char *p, *end;

	snprintf(pat, sizeof(pat), "\"key\":\"%s\"", key);
	p = strstr(json, pat);
	if (p == NULL)
		return -1;
	end = strchr(p, '}');
	snprintf(pat, sizeof(pat), "\"%s\":", member);
	const char *m = strstr(p, pat);
	if (m == NULL || (end && m > end))
		return -1;
	return strtol(m + strlen(pat), NULL, 10);
}

/* Seed a retry record under key as a failure `ago` seconds ago. */
static void seed_retry(const struct ctx *c, const char *key, const char *algos,
		       const char *kind, int code, int ago)
{
	struct q_spool *sp = spool_open(c);
	struct q_hints *h = NULL;
	struct q_retry_rule rule = {0};
	const char *err = NULL;

	CU_ASSERT_FATAL(sp != NULL);
	CU_ASSERT_FATAL(q_spool_hints(sp, &h, &err) == 0);
	CU_ASSERT_FATAL(q_retry_parse_algos(algos, &rule, &err) == 0);
	CU_ASSERT_FATAL(q_retry_fail(h, key, &rule, 0, kind, code, 0,
				     "seeded failure", time(NULL) - ago, NULL,
				     &err) == 0);
	q_retry_rule_clear(&rule);
	q_spool_close(&sp);
}

/* Deferrals time out: an address that a server keeps deferring (4xx to
 * RCPT, or to MAIL), and a host that answers and then fails every time,
 * bounce past the rule's final cutoff instead of staying queued for
 * ever; a message older than the cutoff times out at its next failure
 * even when the failure's record is new (Exim's rule). */
static void test_timeout_4xx(void)
{
	enum { SEED_NONE, SEED_ADDR, SEED_HOST };
	static const struct {
		const char *name, *script, *rule;
		int seed;               /* a record from 3 h ago */
		int wait_ms;            /* between submit and run */
		bool bounce;
		const char *kind;       /* of the record left, when deferred */
	} cases[] = {
		{"rcpt 4xx, record past the cutoff",
		 "rcpt 1: 452 4.2.2 mailbox full\n", "F,1s,2h", SEED_ADDR, 0,
		 true, NULL},
		{"rcpt 4xx, within the cutoff", "rcpt 1: 452 4.2.2 mailbox full\n",
		 "F,2h,15m", SEED_NONE, 0, false, "rcpt_4xx"},
		{"mail 4xx, message older than the cutoff",
		 "mail: 451 4.7.1 try again later\n", "F,1s,1s", SEED_NONE, 2100,
		 true, NULL},
		{"mail 4xx, within the cutoff: an address record",
		 "mail: 451 4.7.1 try again later\n", "F,2h,15m", SEED_NONE, 0,
		 false, "mail_4xx"},
		{"421 after connecting, host record past the cutoff",
		 "mail: 421 4.3.2 shutting down; close\n", "F,1s,2h", SEED_HOST, 0,
		 true, NULL},
		{"dot 4xx, message older than the cutoff",
		 "dot: 451 4.3.0 try later\n", "F,1s,1s", SEED_NONE, 2100, true,
		 NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char id[Q_ID_LEN + 1], bid[Q_ID_LEN + 1], akey[128], hkey[128];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script,
					  NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\nretry * * %s\n", s.port[0],
			 cases[i].rule);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL,
				       id) == 0);
		snprintf(akey, sizeof(akey), "x@d.test:%s", id);
		snprintf(hkey, sizeof(hkey), "T:mx.test:127.0.0.1:%u", s.port[0]);
		if (cases[i].seed == SEED_ADDR)
			seed_retry(&c, akey, cases[i].rule, "rcpt_4xx", 452, 3 * 3600);
		if (cases[i].seed == SEED_HOST)
			seed_retry(&c, hkey, cases[i].rule, "lost_connection", 421,
				   3 * 3600);
		if (cases[i].wait_ms)
			usleep((useconds_t)cases[i].wait_ms * 1000);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-f", NULL), 0);
		bool ok = jnum(o.out, "failed") == (cases[i].bounce ? 1 : 0) &&
			  jnum(o.out, "bounces") == (cases[i].bounce ? 1 : 0) &&
			  jnum(o.out, "deferred") == (cases[i].bounce ? 0 : 1);
		CU_ASSERT(ok);
		if (!ok)
			fprintf(stderr, "timeout case '%s': %s\n", cases[i].name,
				o.out);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 1);
		char *rj = retry_json(&c);
		if (cases[i].bounce) {
			/* gone, and its bounce says why */
			CU_ASSERT_PTR_NULL(strstr(rj, akey));
			other_id(&c, id, bid);
			CU_ASSERT_FATAL(bid[0] != '\0');
			char *body = show(&c, bid, "--body");
			CU_ASSERT_PTR_NOT_NULL(strstr(body, "Final-Recipient: rfc822; x@d.test"));
			CU_ASSERT_PTR_NOT_NULL(strstr(body, "retry timeout exceeded"));
			free(body);
		} else {
			CU_ASSERT_STRING_EQUAL(retry_kind(rj, akey), cases[i].kind);
		}
		free(rj);
		srv_stop(&s);
	}
}

/* A host that accepts the connection and then fails keeps its record's
 * first failure from run to run (so that it can time out), and a
 * transaction that goes through clears it. */
static void test_host_record_ages(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char hkey[128];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "conn 1-2\nmail: 421 4.3.2 shutting down; close\n",
				  NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
	snprintf(hkey, sizeof(hkey), "T:mx.test:127.0.0.1:%u", s.port[0]);

	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	char *rj = retry_json(&c);
	long ff1 = retry_num(rj, hkey, "first_failed");
	free(rj);
	CU_ASSERT(ff1 > 0);

	sleep(1);
	/* -f: the IP is tried although not due; it connects, then fails */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-f", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	rj = retry_json(&c);
	CU_ASSERT_EQUAL(retry_num(rj, hkey, "first_failed"), ff1);
	CU_ASSERT(retry_num(rj, hkey, "last_try") > ff1);
	free(rj);

	/* the third connection takes the message: the record goes */
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-f", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
	t_out_free(&o);
	rj = retry_json(&c);
	CU_ASSERT_EQUAL(count_host_keys(rj), 0);
	free(rj);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "conns"), 3);
}

/* A bounce owed by a run that died (or could not queue it) is queued by
 * the next run: the failure is journaled X (bounce owed) first, F only
 * once the bounce is queued, so a crash in between never loses it. The
 * states a killed runner leaves are made here with libq. */
static void test_bounce_owed(void)
{
	static const struct {
		const char *name;
		const char *rcpts;      /* the first one failed (X) */
		bool commit;            /* the X merged into -H and the index */
		long delivered;         /* by the run */
	} cases[] = {
		{"X in the journal, another recipient pending",
		 "bad@d.test ok@d.test", false, 1},
		{"X in the journal only, nothing else pending", "bad@d.test",
		 false, 0},
		{"X committed, nothing pending (bounce failed earlier)",
		 "bad@d.test", true, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char id[Q_ID_LEN + 1], bid[Q_ID_LEN + 1];
		const char *err = NULL;

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", cases[i].rcpts, NULL,
				       id) == 0);
		struct q_spool *sp = spool_open(&c);
		struct q_msg *msg = NULL;
		CU_ASSERT_FATAL(sp != NULL);
		CU_ASSERT_FATAL(q_msg_lock(sp, id, &msg, &err) == 0);
		CU_ASSERT_FATAL(q_msg_journal(msg, 0, Q_RCPT_FAILED_OWED, 550,
					      "mx.test", "5.1.1 no such user", 0,
					      &err) == 0);
		if (cases[i].commit)
			CU_ASSERT_FATAL(q_msg_commit(msg, 0, &err) == 0);
		q_msg_unlock(&msg);
		q_spool_close(&sp);
		CU_ASSERT_EQUAL(queue_count(&c), 1);

		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		bool ok = jnum(o.out, "bounces") == 1 &&
			  jnum(o.out, "delivered") == cases[i].delivered &&
			  jnum(o.out, "completed") == 1;
		CU_ASSERT(ok);
		if (!ok)
			fprintf(stderr, "owed case '%s': %s\n", cases[i].name, o.out);
		t_out_free(&o);
		/* the message is gone, its bounce queued, naming bad@ only */
		CU_ASSERT_EQUAL(queue_count(&c), 1);
		other_id(&c, id, bid);
		CU_ASSERT_FATAL(bid[0] != '\0');
		char *body = show(&c, bid, "--body");
		CU_ASSERT_PTR_NOT_NULL(strstr(body, "Final-Recipient: rfc822; bad@d.test"));
		CU_ASSERT_PTR_NULL(strstr(body, "ok@d.test"));
		free(body);
		/* a second run makes no second bounce */
		srv_stop(&s);
		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 0);
		t_out_free(&o);
	}
}

/* A failure journaled while the message stays: X until the bounce is
 * queued in the same run, then F in the -H the run commits. */
static void test_bounce_marks_f(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;
	char id[Q_ID_LEN + 1];
	const char *err = NULL;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "rcpt 1: 550 5.1.1 no such user\n"
				  "rcpt 2: 451 4.3.0 try later\n", NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "bad@d.test later@d.test",
			       NULL, id) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
	t_out_free(&o);
	struct q_spool *sp = spool_open(&c);
	struct q_env *env = NULL;
	CU_ASSERT_FATAL(sp != NULL);
	CU_ASSERT_FATAL(q_spool_read(sp, id, &env, &err) == 0);
	CU_ASSERT_EQUAL(env->rcpt[0].state, Q_RCPT_FAILED);
	CU_ASSERT_EQUAL(env->rcpt[1].state, Q_RCPT_PENDING);
	q_env_free(&env);
	q_spool_close(&sp);
	srv_stop(&s);
}

/* A server that refuses one sender at MAIL and hangs up (Exim's drop
 * ACL): that sender's message fails (5xx) or is deferred by its own
 * address record (4xx); the IP gets no retry record, so the next
 * sender's message goes through on a new connection in the same run. */
static void test_mail_refused_close(void)
{
	static const struct {
		const char *reply;
		bool permanent;
	} cases[] = {
		{"550 5.7.1 sender rejected", true},
		{"451 4.7.1 sender deferred", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char id1[Q_ID_LEN + 1], id2[Q_ID_LEN + 1], script[128], key[128];

		snprintf(script, sizeof(script), "conn 1\nmail: %s; close\n",
			 cases[i].reply);
		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, script, NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "bad@sender.test", "x@d.test", NULL,
				       id1) == 0);
		CU_ASSERT_FATAL(submit(&c, "good@sender.test", "y@d.test", NULL,
				       id2) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
		CU_ASSERT_EQUAL(jnum(o.out, "failed"), cases[i].permanent ? 1 : 0);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), cases[i].permanent ? 0 : 1);
		CU_ASSERT_EQUAL(jnum(o.out, "connections"), 2);
		t_out_free(&o);
		char *rj = retry_json(&c);
		CU_ASSERT_EQUAL(count_host_keys(rj), 0);
		snprintf(key, sizeof(key), "x@d.test:%s", id1);
		CU_ASSERT_STRING_EQUAL(retry_kind(rj, key),
				       cases[i].permanent ? "" : "mail_4xx");
		free(rj);
		/* the refused one was asked once, never sent again */
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM:<bad@"), 1);
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM:<good@"), 1);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
	}
}

/* max_rcpt splits a message's recipients into several transactions */
static void test_max_rcpt(void)
{
	struct ctx c;
	struct srv s;
	struct t_out o;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, NULL, NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\nmax_rcpt = 2\n", s.port[0]);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test",
			       "r1@d.test r2@e.test r3@d.test r4@e.test r5@d.test",
			       NULL, NULL) == 0);
	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
	CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 5);
	CU_ASSERT_EQUAL(jnum(o.out, "completed"), 1);
	CU_ASSERT_EQUAL(jnum(o.out, "connections"), 1);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	char *acc = rec_accepted(&s);
	for (int i = 1; i <= 5; i++) {
		char a[32];
		snprintf(a, sizeof(a), "<r%d@", i);
		CU_ASSERT_EQUAL(count_str(acc, a), 1);
	}
	free(acc);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "msgs"), 3);
	CU_ASSERT_EQUAL(sstat(&s, "rcpts"), 5);
	CU_ASSERT_EQUAL(rec_count(&s, "msg", "to=<r1@d.test>,<r2@e.test> "), 1);
}

/* A server with a limit of 2 recipients per transaction, as big
 * providers answer it ("452 4.5.3 Too many recipients", RFC 5321
 * 4.5.3.1.10): the rest go in further transactions on the same
 * connection at once, without retry records; after the first "too many"
 * no transaction on that connection asks for more than the server took. */
static void test_rcpt_limit(void)
{
	static const struct {
		const char *reply;      /* to the 3rd and later RCPT */
	} cases[] = {
		{"452 4.5.3 Too many recipients"},
		{"552 5.5.3 Too many recipients"},   /* RFC 5321: temporary */
		{"452 too many recipients, try again"},  /* no enhanced code */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char script[512];
		size_t l = 0;

		for (int k = 3; k <= 7; k++)
			l += (size_t)snprintf(script + l, sizeof(script) - l,
					      "rcpt %d: %s\n", k, cases[i].reply);
		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, script, NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "r1@d.test r2@d.test "
				       "r3@d.test r4@d.test r5@d.test r6@d.test "
				       "r7@d.test", NULL, NULL) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 7);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "failed"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "bounces"), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "completed"), 1);
		CU_ASSERT_EQUAL(jnum(o.out, "connections"), 1);
		t_out_free(&o);
		CU_ASSERT_EQUAL(queue_count(&c), 0);
		char *rj = retry_json(&c);
		CU_ASSERT_PTR_NULL(strstr(rj, "@d.test"));
		CU_ASSERT_EQUAL(count_host_keys(rj), 0);
		free(rj);
		char *acc = rec_accepted(&s);
		for (int k = 1; k <= 7; k++) {
			char a[32];
			snprintf(a, sizeof(a), "<r%d@", k);
			CU_ASSERT_EQUAL(count_str(acc, a), 1);
		}
		free(acc);
		/* 7 + 5 refused in the first transaction; a runner that did
		   not keep to the limit would send 7 + 5 + 3 + 1 */
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "RCPT TO"), 12);
		char lp[PATH_MAX + 32];
		snprintf(lp, sizeof(lp), "%s/log/mainlog", c.spool);
		char *log = t_read_file(lp, NULL);
		CU_ASSERT_EQUAL(count_str(log, "took 2 of 7 recipients (its "
					  "recipient limit): 5 more"), 1);
		free(log);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 4);
		CU_ASSERT_EQUAL(sstat(&s, "rcpts"), 7);
	}
}

/* RFC 6152: a message with 8-bit data says BODY=8BITMIME to a server
 * that offers 8BITMIME; a 7-bit one never does; a server without the
 * offer gets the message without BODY= (nothing is lost). */
static void test_8bitmime(void)
{
	static const struct {
		const char *script;
		const char *body;
		int body8;              /* BODY=8BITMIME expected on MAIL */
	} cases[] = {
		{NULL, "Subject: caf\xc3\xa9\n\nd\xc3\xa9j\xc3\xa0 vu\n", 1},
		{NULL, "Subject: plain\n\nascii only\n", 0},
		{"ext -8BITMIME\n", "Subject: caf\xc3\xa9\n\n8-bit\n", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char id[Q_ID_LEN + 1];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script,
					  NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test",
				       cases[i].body, id) == 0);
		bool eight = strchr(cases[i].body, '\xc3') != NULL;
		char *js = show(&c, id, "--json");
		CU_ASSERT_PTR_NOT_NULL(strstr(js, eight ? "\"8bit\":true"
					      : "\"8bit\":false"));
		free(js);
		CU_ASSERT_EQUAL(QRUN(&c, &o, NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), 1);
		t_out_free(&o);
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "MAIL FROM:<a@sender.test>"), 1);
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", "BODY=8BITMIME"),
				cases[i].body8);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), 1);
	}
}

/* A 452 that is not the recipient limit stays an address's deferral:
 * "4.2.2 mailbox full" after an accepted recipient, and a "too many" to
 * the first RCPT of a transaction (nothing taken, so no limit shown). */
static void test_rcpt_452_other(void)
{
	static const struct {
		const char *script, *rcpts, *deferred;
		long delivered;
	} cases[] = {
		{"rcpt 2: 452 4.2.2 mailbox full\n", "ok@d.test full@d.test",
		 "full@d.test", 1},
		{"rcpt 1: 452 4.5.3 Too many recipients\n", "first@d.test",
		 "first@d.test", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctx c;
		struct srv s;
		struct t_out o;
		char id[Q_ID_LEN + 1], key[128], cmd[64];

		CU_ASSERT_FATAL(ctx_init(&c) == 0);
		CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0, cases[i].script,
					  NULL) == 0);
		ctx_hosts(&c, "127.0.0.1 mx.test\n");
		ctx_conf(&c, "route * = mx.test:%u\n", s.port[0]);
		CU_ASSERT_FATAL(submit(&c, "a@sender.test", cases[i].rcpts, NULL,
				       id) == 0);
		CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "1", NULL), 0);
		CU_ASSERT_EQUAL(jnum(o.out, "delivered"), cases[i].delivered);
		CU_ASSERT_EQUAL(jnum(o.out, "deferred"), 1);
		t_out_free(&o);
		char *rj = retry_json(&c);
		snprintf(key, sizeof(key), "%s:%s", cases[i].deferred, id);
		CU_ASSERT_STRING_EQUAL(retry_kind(rj, key), "rcpt_4xx");
		free(rj);
		CU_ASSERT_EQUAL(queue_count(&c), 1);
		/* asked for once: no second transaction for it */
		snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>", cases[i].deferred);
		CU_ASSERT_EQUAL(rec_count(&s, "cmd", cmd), 1);
		srv_stop(&s);
		CU_ASSERT_EQUAL(sstat(&s, "msgs"), cases[i].delivered);
	}
}

/* qrun -d: a run every interval; SIGHUP re-reads the configuration;
 * SIGTERM ends it (exit 0) */
static void test_daemon(void)
{
	struct ctx c;
	struct srv s1, s2;
	pid_t pid;
	char out[PATH_MAX + 32];

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s1, &c, "one", 0, NULL, NULL) == 0);
	CU_ASSERT_FATAL(srv_start(&s2, &c, "two", 0, NULL, NULL) == 0);
	ctx_hosts(&c, "127.0.0.1 mx.test\n");
	ctx_conf(&c, "route * = mx.test:%u\n", s1.port[0]);
	/* the spool must exist before the daemon opens it */
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "x@d.test", NULL, NULL) == 0);
	snprintf(out, sizeof(out), "%s/daemon.out", c.dir);
	const char *argv[] = {t_bin("qrun"), "-C", c.conf, "-d", "-i", "1s", NULL};
	pid = ts_spawn(argv, NULL, out);
	CU_ASSERT_FATAL(pid > 0);
	CU_ASSERT(rec_wait(&s1, "msg", "to=<x@d.test>", 10000) == 0);

	/* a new route, then SIGHUP: the next message goes to server two */
	ctx_conf(&c, "route * = mx.test:%u\n", s2.port[0]);
	kill(pid, SIGHUP);
	usleep(100000);
	CU_ASSERT_FATAL(submit(&c, "a@sender.test", "y@d.test", NULL, NULL) == 0);
	CU_ASSERT(rec_wait(&s2, "msg", "to=<y@d.test>", 10000) == 0);
	CU_ASSERT_EQUAL(rec_count(&s1, "msg", "to=<y@d.test>"), 0);

	kill(pid, SIGTERM);
	struct bg b = {.pid = pid};
	CU_ASSERT_EQUAL(bg_wait(&b, 10000), 0);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	srv_stop(&s1);
	srv_stop(&s2);
	CU_ASSERT_EQUAL(sstat(&s1, "msgs"), 1);
	CU_ASSERT_EQUAL(sstat(&s2, "msgs"), 1);
}

/* ====================================================================== */
/* the engine in this process (so that the sanitizer build checks it):
   several destinations and faults in one run */

static void test_inproc(void)
{
	struct ctx c;
	struct srv s;
	const char *const ls[] = {"-l", "127.0.0.1", "-l", "127.0.0.2", "-l",
				  "127.0.0.3", "-l", "127.0.0.4,refuse", NULL};
	long sink = 0;

	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "srv", 0,
				  "conn default @2\n"
				  "rcpt 2: 450 4.2.0 later\n"
				  "rcpt 3: 550 5.1.1 no such user\n"
				  "conn default @3\n"
				  "data: drop\n", ls) == 0);
	ctx_hosts(&c, "127.0.0.1 sink.test\n127.0.0.2 mix.test\n"
		  "127.0.0.3 drop.test\n127.0.0.4 refuse.test\n");
	ctx_conf(&c, "route mix.test = mix.test:%u\n"
		 "route drop.test = drop.test:%u\n"
		 "route fb.test = refuse.test:%u\n"
		 "route * = sink.test:%u\n"
		 "fallback_hosts = sink.test:%u\n",
		 s.port[0], s.port[0], s.port[0], s.port[0], s.port[0]);

	struct q_spool *sp = spool_open(&c);
	CU_ASSERT_FATAL(sp != NULL);
	char id[Q_ID_LEN + 1];
	for (int i = 0; i < 40; i++) {
		char r[256];
		int n = 1 + i % 3;
		size_t l = 0;
		for (int j = 0; j < n; j++)
			l += (size_t)snprintf(r + l, sizeof(r) - l, "%su%d.%d@a%d.test",
					      j ? " " : "", i, j, (i + j) % 4);
		sink += n;
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", r, NULL, id) == 0);
	}
	for (int i = 0; i < 5; i++) {
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test",
					  "ok@mix.test later@mix.test bad@mix.test",
					  NULL, id) == 0);
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", "x@drop.test",
					  big_body(), id) == 0);
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", "y@fb.test z@fb.test",
					  NULL, id) == 0);
	}

	struct q_conf *conf = NULL;
	const char *err = NULL;
	CU_ASSERT_FATAL(q_conf_load(c.conf, &conf, &err) == 0);
	struct q_run_opts ro = {.parallel = 4};
	struct q_run_stats st;
	CU_ASSERT_EQUAL(q_run(sp, conf, &ro, &st, &err), 0);
	CU_ASSERT_EQUAL(st.messages, 55);
	/* mix: 1 of 3 each; drop (the connection is lost before the data):
	   through the fallback; fb (refused): the fallback */
	CU_ASSERT_EQUAL(st.delivered, (size_t)sink + 5 + 5 + 10);
	CU_ASSERT_EQUAL(st.deferred, 5);
	CU_ASSERT_EQUAL(st.failed, 5);
	CU_ASSERT_EQUAL(st.bounces, 5);
	CU_ASSERT_EQUAL(st.completed, 50);
	size_t left = 0;
	CU_ASSERT_EQUAL(q_spool_count(sp, &left, &err), 0);
	CU_ASSERT_EQUAL(left, 10);          /* 5 with later@, 5 bounces */
	CU_ASSERT_EQUAL(rec_count(&s, "close", "reason=script-drop"), 1);

	/* again, forced: the bounces (to sender.test: the sink) and the
	   deferred ones (alone in their transaction now: accepted) */
	ro.force = true;
	CU_ASSERT_EQUAL(q_run(sp, conf, &ro, &st, &err), 0);
	CU_ASSERT_EQUAL(st.messages, 10);
	CU_ASSERT_EQUAL(st.delivered, 10);
	CU_ASSERT_EQUAL(st.completed, 10);
	CU_ASSERT_EQUAL(q_spool_count(sp, &left, &err), 0);
	CU_ASSERT_EQUAL(left, 0);
	q_conf_free(&conf);
	q_spool_close(&sp);
	srv_stop(&s);
	CU_ASSERT_EQUAL(sstat(&s, "rcpts"), sink + 5 + 5 + 10 + 10);
}

/* Out of file descriptors (a low ulimit -n): the run stops with an error
 * that says so and how to fix it, exits non-zero, and loses nothing: the
 * next run, with the usual limit, delivers the rest, each recipient
 * once. (It used to skip every message it could not open and exit 0.)
 * The limit is set with prlimit(1), from util-linux. */
static void test_out_of_fds(void)
{
	struct ctx c;
	struct srv s;
	enum { N = 300 };
	const char *prl = "/usr/bin/prlimit";

	if (access(prl, X_OK) != 0) {
		fprintf(stderr, "\n  (no %s: test not run)\n", prl);
		return;
	}
	CU_ASSERT_FATAL(ctx_init(&c) == 0);
	CU_ASSERT_FATAL(srv_start(&s, &c, "sink", 0, NULL, NULL) == 0);
	ctx_conf(&c, "route * = 127.0.0.1:%u\n", s.port[0]);
	struct q_spool *sp = spool_open(&c);
	CU_ASSERT_FATAL(sp != NULL);
	for (int i = 0; i < N; i++) {
		char r[64], id[Q_ID_LEN + 1];

		snprintf(r, sizeof(r), "u%d@d%d.test", i, i % 7);
		CU_ASSERT_FATAL(submit_sp(sp, "a@sender.test", r, NULL, id) == 0);
	}
	q_spool_close(&sp);

	struct t_out o;
	const char *argv[] = { prl, "--nofile=90:90", t_bin("qrun"), "-C",
			       c.conf, "-P", "4", "--json", NULL };
	CU_ASSERT_FATAL(argv[2] != NULL);
	CU_ASSERT_EQUAL_FATAL(t_run(argv, NULL, &o), 0);
	CU_ASSERT(o.status != 0 && o.status < 128);
	CU_ASSERT_PTR_NOT_NULL(o.err != NULL ?
			       strstr(o.err, "Too many open files") : NULL);
	CU_ASSERT_PTR_NOT_NULL(o.err != NULL ? strstr(o.err, "ulimit -n") : NULL);
	t_out_free(&o);
	CU_ASSERT(queue_count(&c) > 0);

	CU_ASSERT_EQUAL(QRUN(&c, &o, "-P", "4", NULL), 0);
	t_out_free(&o);
	CU_ASSERT_EQUAL(queue_count(&c), 0);
	char *acc = rec_accepted(&s);
	int missing = 0, dup = 0;
	for (int i = 0; i < N; i++) {
		char a[64];

		snprintf(a, sizeof(a), "<u%d@d%d.test>", i, i % 7);
		tally(acc, a, &missing, &dup);
	}
	CU_ASSERT_EQUAL(missing, 0);
	CU_ASSERT_EQUAL(dup, 0);
	free(acc);
	srv_stop(&s);
}

void suite_qrun(void)
{
	CU_pSuite s = CU_add_suite("qrun", NULL, NULL);

	CU_add_test(s, "200 messages, 1-3 recipients, 6 domains: all at the sink", test_bulk);
	CU_add_test(s, "out of file descriptors: stops, says so, loses nothing",
		    test_out_of_fds);
	CU_add_test(s, "pipelining used when advertised, never otherwise", test_pipelining);
	CU_add_test(s, "2xx, 4xx and 5xx RCPT in one transaction; bounce", test_rcpt_mixed);
	CU_add_test(s, "disconnect mid-DATA: pending, lost_connection, then once", test_mid_data);
	CU_add_test(s, "stalls past command/final timeout: deferred, timeout", test_stall);
	CU_add_test(s, "malformed replies: deferred as protocol errors", test_malformed);
	CU_add_test(s, "STARTTLS refused, with and without hosts_require_tls",
		    test_starttls_refused);
	CU_add_test(s, "certificate that fails verification: tls_required", test_verify_fails);
	CU_add_test(s, "two IPs of one host, one refusing: per-IP retry", test_two_ips);
	CU_add_test(s, "fallback_hosts only after every primary failed", test_fallback);
	CU_add_test(s, "hosts_max_try = 2 of 4 IPs", test_hosts_max_try);
	CU_add_test(s, "batch_max with one TLS handshake per connection", test_batch_tls);
	CU_add_test(s, "serialize_hosts never exceeded with -P 8", test_serialize);
	CU_add_test(s, "serialize_hosts across two runs at once", test_serialize_two_runs);
	CU_add_test(s, "a runner killed mid-delivery: slot and session die with it",
		    test_killed_runner);
	CU_add_test(s, "one bounce for a 5xx, none from <>", test_bounce);
	CU_add_test(s, "bounce fields: MAIL refused, .invalid domain",
		    test_bounce_fields);
	CU_add_test(s, "exit codes", test_exit_codes);
	CU_add_test(s, "-M ID and -R DOMAIN", test_select);
	CU_add_test(s, "-f ignores retry times", test_force);
	CU_add_test(s, "queue_run_max: an extra run says so and exits 0", test_queue_run_max);
	CU_add_test(s, "live sessions while a delivery runs", test_sessions);
	CU_add_test(s, "handoff refused (close after the dot, RSET refused): once each",
		    test_handoff_refused);
	CU_add_test(s, "past the retry cutoff: bounce, delay_after_cutoff", test_cutoff);
	CU_add_test(s, "4xx to RCPT, MAIL, dot and 421 after connect time out: bounce",
		    test_timeout_4xx);
	CU_add_test(s, "a host record ages across runs; a transaction clears it",
		    test_host_record_ages);
	CU_add_test(s, "a bounce owed by a killed run is queued by the next",
		    test_bounce_owed);
	CU_add_test(s, "a failure is X until its bounce is queued, then F",
		    test_bounce_marks_f);
	CU_add_test(s, "MAIL refused and a hang-up: the sender's, not the IP's",
		    test_mail_refused_close);
	CU_add_test(s, "max_rcpt = 2: five recipients in three transactions", test_max_rcpt);
	CU_add_test(s, "452/552 too many recipients: the rest at once, no retry record",
		    test_rcpt_limit);
	CU_add_test(s, "452 mailbox full, 452 to the first RCPT: address deferrals",
		    test_rcpt_452_other);
	CU_add_test(s, "BODY=8BITMIME for 8-bit data where offered, never else",
		    test_8bitmime);
	CU_add_test(s, "qrun -d: runs every interval, SIGHUP, SIGTERM", test_daemon);
	CU_add_test(s, "q_run in this process: 55 messages, 4 kinds of destination",
		    test_inproc);
}
