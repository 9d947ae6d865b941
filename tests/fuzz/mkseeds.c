/*
 * tests/fuzz/mkseeds.c - writes the seed corpora of the fuzz targets
 * (make fuzz-seeds: ./tests/fuzz/bin/mkseeds tests/fuzz/corpus).
 *
 * What libq makes is made by libq here: -H and -J files of messages
 * created, journaled, committed and frozen in a scratch spool; the
 * default configuration as q_conf_print writes it; hints records as the
 * hints databases store them (retry, index, serialize slots, sessions,
 * read back raw with q_hints_iter). The rest (SMTP replies as real
 * servers send them, configurations, retry rules, addresses and
 * headers) comes from the tables below. Existing files of the same
 * name are overwritten; other files are left alone.
 */
#include "config.h"
#include "q/addr.h"
#include "q/conf.h"
#include "q/hints.h"
#include "q/retry.h"
#include "q/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *top;
static unsigned nwritten;

static void die(const char *what, const char *err)
{
	fprintf(stderr, "mkseeds: %s: %s\n", what, err ? err : strerror(errno));
	exit(1);
}

static void put(const char *target, const char *name, const void *p, size_t n)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", top, target);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		die(path, NULL);
	snprintf(path, sizeof(path), "%s/%s/%s", top, target, name);
	f = fopen(path, "wb");
	if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0)
		die(path, NULL);
	nwritten++;
}

static void puts_(const char *target, const char *name, const char *s)
{
	put(target, name, s, strlen(s));
}

/* with a selector byte first (fuzz_record) */
static void put_rec(const char *name, unsigned sel, const void *p, size_t n)
{
	char *b = malloc(n + 1);

	if (b == NULL)
		die("malloc", NULL);
	b[0] = (char)sel;
	memcpy(b + 1, p, n);
	put("record", name, b, n + 1);
	free(b);
}

static void read_file(const char *path, struct q_buf *b)
{
	char buf[8192];
	FILE *f = fopen(path, "rb");
	size_t n;

	q_buf_reset(b);
	if (f == NULL)
		die(path, NULL);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		if (q_buf_add(b, buf, n) < 0)
			die("q_buf_add", NULL);
	fclose(f);
}

/* ---- replies ---- */

static const char *const replies[][2] = {
	{ "banner-postfix", "220 mail.example.com ESMTP Postfix (Debian/GNU)\r\n" },
	{ "banner-exim", "220 mx.example.org ESMTP Exim 4.96 Mon, 06 Nov 2023 "
	  "10:00:00 +0000\r\n" },
	{ "banner-multi", "220-mx.example.net ESMTP\r\n220-No UCE.\r\n"
	  "220 Ready\r\n" },
	{ "ehlo-postfix", "250-mail.example.com\r\n250-PIPELINING\r\n"
	  "250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n"
	  "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
	  "250-SMTPUTF8\r\n250 CHUNKING\r\n" },
	{ "ehlo-exim", "250-mx.example.org Hello client.example [192.0.2.1]\r\n"
	  "250-SIZE 52428800\r\n250-8BITMIME\r\n250-PIPELINING\r\n"
	  "250-PIPE_CONNECT\r\n250-CHUNKING\r\n250-STARTTLS\r\n250-PRDR\r\n"
	  "250 HELP\r\n" },
	{ "ehlo-gmail", "250-mx.google.com at your service, [192.0.2.1]\r\n"
	  "250-SIZE 157286400\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
	  "250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
	  "250 SMTPUTF8\r\n" },
	{ "ehlo-bare-lf", "250-smtp.example\n250-PIPELINING\n250 SIZE\n" },
	{ "starttls", "220 2.0.0 Ready to start TLS\r\n" },
	{ "mail-ok", "250 2.1.0 Ok\r\n" },
	{ "pipelined", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	  "550 5.1.1 <nobody@example.com>: Recipient address rejected: User "
	  "unknown in local recipient table\r\n354 End data with "
	  "<CR><LF>.<CR><LF>\r\n" },
	{ "data-exim", "354 Enter message, ending with \".\" on a line by "
	  "itself\r\n" },
	{ "queued-postfix", "250 2.0.0 Ok: queued as 4SQbQk1Zx5z9sWn\r\n" },
	{ "queued-exim", "250 OK id=1qzABC-000Abc-7d\r\n" },
	{ "greylist", "451 4.7.1 <a@example.com>: Recipient address rejected: "
	  "Greylisted, see http://postgrey.schweikert.ch/help/example.com.html"
	  "\r\n" },
	{ "too-many", "452 4.5.3 Error: too many recipients\r\n" },
	{ "421", "421 4.7.0 mail.example.com Error: too many connections from "
	  "192.0.2.1\r\n" },
	{ "size", "552 5.3.4 Message size exceeds fixed limit\r\n" },
	{ "blocklist", "554 5.7.1 Service unavailable; Client host [192.0.2.1] "
	  "blocked using zen.spamhaus.org\r\n" },
	{ "multi-550", "550-5.1.1 The email account that you tried to reach "
	  "does not exist.\r\n550-5.1.1 Please try double-checking the "
	  "recipient's email\r\n550 5.1.1 address for typos. - gsmtp\r\n" },
	{ "quit", "221 2.0.0 Bye\r\n" },
	{ "code-only", "250\r\n" },
	{ "cr-in-text", "250 text with\rCR inside\r\n" },
	{ "bad-short-code", "25 ok\r\n" },
	{ "bad-mixed", "250-a\r\n251 b\r\n" },
	{ "bad-empty-line", "\r\n" },
	{ "partial", "250-PIPELINING\r\n250-SIZ" },
};

static void seeds_reply(void)
{
	struct q_buf b = { 0 };

	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++)
		puts_("reply", replies[i][0], replies[i][1]);
	/* a long line and a long reply, near the limits */
	q_buf_adds(&b, "250 ");
	for (int i = 0; i < 2040; i++)
		q_buf_addc(&b, (char)('a' + i % 26));
	q_buf_adds(&b, "\r\n");
	put("reply", "long-line", b.data, b.len);
	q_buf_reset(&b);
	for (int i = 0; i < 120; i++)
		q_buf_printf(&b, "250-line %d of a long reply with some text\r\n", i);
	q_buf_adds(&b, "250 last\r\n");
	put("reply", "many-lines", b.data, b.len);
	/* one line more than Q_REPLY_MAX_LINES (an error) */
	q_buf_reset(&b);
	for (int i = 0; i < 200; i++)
		q_buf_adds(&b, "250-x\r\n");
	q_buf_adds(&b, "250 y\r\n");
	put("reply", "too-many-lines", b.data, b.len);
	/* 2049 octets with a bare LF: one over Q_REPLY_MAX_LINE (an error) */
	q_buf_reset(&b);
	q_buf_adds(&b, "250 ");
	for (int i = 0; i < 2045; i++)
		q_buf_addc(&b, 'z');
	q_buf_adds(&b, "\n");
	put("reply", "line-too-long-lf", b.data, b.len);
	q_buf_free(&b);
}

/* ---- envelopes and journals (libq-made) ---- */

static void seeds_spool(const char *scratch)
{
	struct q_spool *s = NULL;
	const char *err = NULL;
	char dir[PATH_MAX], path[PATH_MAX], id[Q_ID_LEN + 1];
	struct q_buf b = { 0 };
	struct q_msg *m = NULL;
	const char *data = "From: a@example.org\r\nSubject: seed\r\n\r\nhello\r\n";
	static const char *const r1[] = { "one@example.com" };
	static const char *const r4[] = {
		"a@example.com", "b@example.net", "c@example.org",
		"\"odd user\"@[192.0.2.1]",
	};
	struct q_newmsg nm = { "sender@example.org", r1, 1, data, strlen(data), 0 };

	snprintf(dir, sizeof(dir), "%s/spool", scratch);
	if (q_spool_open(dir, Q_SPOOL_CREATE, &s, &err) < 0)
		die("q_spool_open", err);

	/* fresh, one recipient */
	if (q_spool_create(s, &nm, Q_CREATE_NOSYNC, id, &err) < 0)
		die("q_spool_create", err);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "fresh-1rcpt", b.data, b.len);

	/* null sender, bounce flag */
	nm.sender = "";
	nm.flags = Q_ENV_BOUNCE;
	if (q_spool_create(s, &nm, Q_CREATE_NOSYNC, id, &err) < 0)
		die("q_spool_create", err);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "bounce-null-sender", b.data, b.len);

	/* four recipients: journal, commit, freeze */
	nm.sender = "sender@example.org";
	nm.flags = 0;
	nm.rcpts = r4;
	nm.nrcpt = 4;
	if (q_spool_create(s, &nm, Q_CREATE_NOSYNC, id, &err) < 0)
		die("q_spool_create", err);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "fresh-4rcpt", b.data, b.len);
	if (q_msg_lock(s, id, &m, &err) != 0)
		die("q_msg_lock", err);
	if (q_msg_journal(m, 0, Q_RCPT_DELIVERED, 250, "mx1.example.com",
			  "2.0.0 Ok: queued as 4SQbQk1Zx5z9sWn", Q_JOURNAL_NOSYNC,
			  &err) < 0 ||
	    q_msg_journal(m, 1, Q_RCPT_PENDING, 451, "mx.example.net",
			  "4.7.1 Greylisted, \"see\" \\help\\ \t\x1b[31m", Q_JOURNAL_NOSYNC,
			  &err) < 0 ||
	    q_msg_journal(m, 2, Q_RCPT_FAILED, 550, "mx.example.org",
			  "5.1.1 <c@example.org>: user unknown", Q_JOURNAL_NOSYNC,
			  &err) < 0 ||
	    q_msg_journal(m, 3, Q_RCPT_PENDING, 0, NULL, "-", Q_JOURNAL_NOSYNC,
			  &err) < 0)
		die("q_msg_journal", err);
	read_file(q_spool_path(s, id, 'J', path, sizeof(path)), &b);
	put("journal", "four-results", b.data, b.len);
	/* a torn last line, as a crash mid-write leaves */
	put("journal", "torn-last-line", b.data, b.len - 7);
	if (q_msg_commit(m, 0, &err) < 0)
		die("q_msg_commit", err);
	q_msg_unlock(&m);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "committed-4rcpt", b.data, b.len);

	if (q_msg_lock(s, id, &m, &err) != 0)
		die("q_msg_lock", err);
	if (q_msg_journal(m, 1, Q_RCPT_DELIVERED, 250, "mx2.example.net", "ok",
			  Q_JOURNAL_NOSYNC, &err) < 0 ||
	    q_msg_journal(m, 3, Q_RCPT_PENDING, 421, "[2001:db8::25]",
			  "4.3.2 closing", Q_JOURNAL_NOSYNC, &err) < 0 ||
	    q_msg_journal(m, 3, Q_RCPT_PENDING, 0, "", "", Q_JOURNAL_NOSYNC,
			  &err) < 0)
		die("q_msg_journal", err);
	read_file(q_spool_path(s, id, 'J', path, sizeof(path)), &b);
	put("journal", "second-attempt", b.data, b.len);
	if (q_msg_set_frozen(m, true, "too many failures: 4.3.2 \"closing\"",
			     &err) < 0)
		die("q_msg_set_frozen", err);
	q_msg_unlock(&m);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "frozen-with-reason", b.data, b.len);
	if (q_msg_lock(s, id, &m, &err) != 0 ||
	    q_msg_set_frozen(m, true, NULL, &err) < 0)
		die("q_msg_set_frozen", err);
	q_msg_unlock(&m);
	read_file(q_spool_path(s, id, 'H', path, sizeof(path)), &b);
	put("envelope", "frozen-no-reason", b.data, b.len);

	q_buf_free(&b);
	q_spool_close(&s);
}

/* ---- configurations ---- */

static const char conf_full[] =
	"# every option, and the syntax's corners\n"
	"spool_directory = /var/spool/qkit\n"
	"hosts_file = /etc/qkit/hosts\n"
	"primary_hostname = mail.example.org\n"
	"port = 25\n"
	"hosts_max_try = 5\n"
	"max_rcpt = 100\n"
	"batch_max = 500\n"
	"connect_timeout = 30s\n"
	"command_timeout = 5m\n"
	"data_timeout = 5m\n"
	"final_timeout = 10m\n"
	"fallback_hosts = relay1.example.org:587, [2001:db8::25]:2525 192.0.2.7\n"
	"serialize_hosts = *.slow.example, !fast.slow.example, 192.0.2.0/24, "
	"2001:db8::/32\n"
	"serialize_max = 2\n"
	"no_retry_include_ip_address\n"
	"hosts_require_tls = *.bank.example\n"
	"hosts_avoid_tls = broken.example\n"
	"tls_verify_hosts = *.bank.example\n"
	"tls_verify_certificates = system\n"
	"tls_certificate = \"/etc/qkit/client cert.pem\"\n"
	"tls_privatekey = /etc/qkit/client.key\n"
	"size_addition = 1K\n"
	"delay_after_cutoff = false\n"
	"keepalive = yes\n"
	"interface = 192.0.2.1\n"
	"remote_max_parallel = 4\n"
	"queue_run_max = 5\n"
	"retry_interval_max = 1d12h\n"
	"route example.com = mx1.example.com mx2.example.com:2525\n"
	"route *.example.net = [192.0.2.10]:25, \\\n"
	"    [2001:db8::10]\n"
	"route lab-?.example = mx\n"
	"route * = mx\n"
	"retry *.example.com * F,2h,15m; G,16h,1h,1.5; F,4d,6h\n"
	"retry *@slow.example rcpt_4xx F,1d,30m\n"
	"retry * timeout_connect_MX F,30m,5m\n"
	"retry user@example.org rcpt_45x G,2d,10m,2.0\n";

static const char *const confs[][2] = {
	{ "demo", "# written by tools/demo.sh\n"
	  "spool_directory = /work/main/var/spool\n"
	  "hosts_file = /work/main/var/hosts\n"
	  "primary_hostname = demo.client.example\n"
	  "connect_timeout = 5s\n"
	  "route down.example = mx.down.example:37342\n"
	  "route * = mx.sink.example:37341\n" },
	{ "crlf-and-quotes", "primary_hostname = a.example\r\n"
	  "tls_verify_certificates = \"/path with \\\"quotes\\\" and \\\\\"\r\n"
	  "size_addition = -1\r\n" },
	{ "bad-twice", "port = 25\nport = 26\n" },
	{ "bad-unknown", "hosts_max_tries = 3\n" },
	{ "bad-continued-at-end", "route * = \\\n" },
	{ "bad-key-without-cert", "tls_privatekey = /k\n" },
};

static void seeds_config(void)
{
	struct q_conf *c = NULL;
	const char *err = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	puts_("config", "full", conf_full);
	for (size_t i = 0; i < sizeof(confs) / sizeof(confs[0]); i++)
		puts_("config", confs[i][0], confs[i][1]);
	if (q_conf_load(NULL, &c, &err) < 0)
		die("q_conf_load", err);
	if ((f = open_memstream(&text, &len)) == NULL)
		die("open_memstream", NULL);
	q_conf_print(c, f);
	fclose(f);
	put("config", "defaults-printed", text, len);
	free(text);
	q_conf_free(&c);
}

/* ---- retry rules, addresses ---- */

static const char *const rules[][2] = {
	{ "default", "F,2h,15m; G,16h,1h,1.5; F,4d,6h" },
	{ "fixed", "F,1d,30m" },
	{ "geometric", "G,2d,10m,2.0" },
	{ "lower-case", "f,4h,10m; g,8d,1h,1.25" },
	{ "long-times", "F,1w2d3h4m5s,1h30m" },
	{ "randomized", "F,2h,15m; H,16h,1h,1.5; h,4d,6h,1.2" },
	{ "bad-order", "F,4d,6h; F,2h,15m" },
	{ "kind-rcpt45x", "rcpt_45x" },
	{ "kind-timeout-connect-mx", "timeout_connect_MX" },
	{ "kind-refused-a", "refused_A" },
	{ "kind-data451", "data_451" },
	{ "kind-lookup", "lookup" },
};

static const char *const addrs[][2] = {
	{ "plain", "user@example.com" },
	{ "dots-plus", "first.last+tag@sub.example.co.uk" },
	{ "quoted", "\"odd \\\"user\\\"@x\"@example.org" },
	{ "ipv4-literal", "postmaster@[192.0.2.1]" },
	{ "ipv6-literal", "postmaster@[IPv6:2001:db8::1]" },
	{ "bad-two-dots", "a..b@example.com" },
	{ "bad-no-domain", "user@" },
	{ "bad-utf8", "j\xc3\xb6rg@example.de" },
	{ "header-to-cc-bcc", "From: Sender <s@example.org>\r\n"
	  "To: \"Doe, John\" <john@example.com>, (comment) jane@example.com\r\n"
	  "Cc: team: a@example.net, b@example.net;,\r\n"
	  "  folded@example.net\r\n"
	  "Bcc: hidden@example.org\r\n"
	  "Subject: hi\r\n\r\nTo: not-a-header@example.com\r\n.dot line\r\n" },
	{ "header-mbox-from", "From sender@example.org Mon Nov  6 10:00:00 2023\n"
	  "To: x@example.com\nbcc: y@example.com\n\nbody\n" },
	{ "header-bad", "To: <broken@example.com\r\n\r\n" },
};

static void seeds_text(void)
{
	struct q_buf b = { 0 };

	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		puts_("retry_rule", rules[i][0], rules[i][1]);
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++)
		puts_("address", addrs[i][0], addrs[i][1]);
	/* at the limits: a 64-octet local part and a 254-octet address
	 * (valid), one octet more (invalid), a 256-octet domain */
	for (int i = 0; i < 64; i++)
		q_buf_addc(&b, 'l');
	q_buf_addc(&b, '@');
	for (int i = 0; i < 63; i++)
		q_buf_addc(&b, 'a');
	q_buf_addc(&b, '.');
	for (int i = 0; i < 63; i++)
		q_buf_addc(&b, 'b');
	q_buf_addc(&b, '.');
	for (int i = 0; i < 57; i++)
		q_buf_addc(&b, 'c');
	q_buf_adds(&b, ".org");
	put("address", "limit-254", b.data, b.len);
	b.len -= 4;
	q_buf_adds(&b, "c.org");
	put("address", "limit-255", b.data, b.len);
	q_buf_reset(&b);
	q_buf_adds(&b, "a@");
	for (int i = 0; i < 4; i++)
		q_buf_adds(&b, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij.");
	q_buf_adds(&b, "example");
	put("address", "domain-over-255", b.data, b.len);
	/* a 999-octet line (refused) after a header */
	q_buf_reset(&b);
	q_buf_adds(&b, "To: a@example.com\r\n\r\n");
	for (int i = 0; i < 999; i++)
		q_buf_addc(&b, 'b');
	q_buf_adds(&b, "\r\n");
	put("address", "line-999", b.data, b.len);
	q_buf_free(&b);
}

/* ---- hints records (libq-made, read raw from the databases) ---- */

struct grab {
	const char *name;
	unsigned sel;
	unsigned n;
};

static int grab_fn(const void *key, size_t klen, const void *val, size_t vlen,
		   void *ctx)
{
	struct grab *g = ctx;
	char name[64];

	(void)key;
	(void)klen;
	snprintf(name, sizeof(name), "%s-%u", g->name, ++g->n);
	put_rec(name, g->sel, val, vlen);
	return g->n >= 3;
}

static void grab(struct q_hints *h, enum q_db db, const char *name, unsigned sel)
{
	struct grab g = { name, sel, 0 };
	const char *err = NULL;

	if (q_hints_iter(h, db, NULL, 0, grab_fn, &g, &err) < 0)
		die("q_hints_iter", err);
	if (g.n == 0)
		die(name, "no record");
}

static void seeds_record(const char *scratch)
{
	struct q_spool *s = NULL;
	struct q_hints *h = NULL;
	struct q_retry_rec rec;
	struct q_session_rec sess;
	const char *err = NULL;
	char dir[PATH_MAX];
	unsigned slot;
	time_t now = time(NULL);

	snprintf(dir, sizeof(dir), "%s/spool", scratch);
	if (q_spool_open(dir, 0, &s, &err) < 0 || q_spool_hints(s, &h, &err) < 0)
		die("hints", err);
	memset(&rec, 0, sizeof(rec));
	if (q_retry_fail(h, "T:mx.example.com:192.0.2.1", NULL, 0, "timeout", 0,
			 110, "connection timed out", now - 7200, NULL, &err) < 0 ||
	    q_retry_fail(h, "T:mx.example.com:192.0.2.1", NULL, 0, "timeout", 0,
			 110, "connection timed out", now, NULL, &err) < 0 ||
	    q_retry_fail(h, "R:example.net", NULL, 0, "lookup", 0, 0, NULL, now,
			 NULL, &err) < 0 ||
	    q_retry_fail(h, "user@example.org:1Ynq4Z-3d0K-00Fz", NULL, 0,
			 "rcpt_4xx", 451, 0, "4.7.1 greylisted", now, NULL,
			 &err) < 0)
		die("q_retry_fail", err);
	grab(h, Q_DB_RETRY, "retry", 0);
	grab(h, Q_DB_INDEX, "index", 1);
	if (q_serialize_take(h, "slow.example", 2, now, NULL, &slot, &err) != 0 ||
	    q_serialize_take(h, "slow.example", 2, now, NULL, &slot,
			     &err) != 0 ||
	    q_serialize_take(h, "[2001:DB8::25]", 1, now - 3600, "a-boot-id",
			     &slot, &err) != 0)
		die("q_serialize_take", err);
	grab(h, Q_DB_SERIALIZE, "slot", 2);
	memset(&sess, 0, sizeof(sess));
	sess.pid = (long)getpid();
	sess.worker = 3;
	sess.host = (char *)"mx.example.com";
	sess.ip = (char *)"2001:db8::25";
	sess.port = 25;
	sess.tls = (char *)"TLSv1.3:TLS_AES_256_GCM_SHA384";
	sess.state = (char *)"rcpt";
	sess.msgid = (char *)"1Ynq4Z-3d0K-00Fz";
	sess.msgs = 12;
	sess.bytes = 123456;
	sess.started = now - 60;
	sess.changed = now;
	if (q_session_put(h, &sess, &err) < 0)
		die("q_session_put", err);
	sess.worker = 4;
	sess.tls = NULL;
	sess.msgid = NULL;
	sess.state = (char *)"connect";
	if (q_session_put(h, &sess, &err) < 0)
		die("q_session_put", err);
	grab(h, Q_DB_SESSIONS, "session", 3);
	q_spool_close(&s);
}

int main(int argc, char **argv)
{
	char scratch[] = "/tmp/qkit-mkseeds-XXXXXX";
	char cmd[PATH_MAX + 16];

	if (argc != 2) {
		fprintf(stderr, "usage: mkseeds CORPUS-DIR\n");
		return 2;
	}
	top = argv[1];
	if (mkdir(top, 0755) < 0 && errno != EEXIST)
		die(top, NULL);
	if (mkdtemp(scratch) == NULL)
		die("mkdtemp", NULL);
	seeds_reply();
	seeds_spool(scratch);
	seeds_config();
	seeds_text();
	seeds_record(scratch);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", scratch);
	if (system(cmd) != 0)
		fprintf(stderr, "mkseeds: could not remove %s\n", scratch);
	printf("mkseeds: %u seeds written under %s\n", nwritten, top);
	return 0;
}
