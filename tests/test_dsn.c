/*
 * tests/test_dsn.c - bounce messages (q_dsn_queue): the per-recipient
 * fields a mail administrator reads (Status, Diagnostic-Code, Remote-MTA,
 * Action), a table of recipient results as the runner stores them, the
 * Message-ID of two bounces of one message, and line lengths.
 *
 * Each case builds a message on a fresh spool, sets its recipients'
 * results in memory (as the journal would), calls q_dsn_queue and reads
 * the bounce's -D file (canonical: CRLF lines, dot-stuffed).
 */
#include "config.h"
#include "q/runner.h"
#include "q/spool.h"
#include "q/addr.h"
#include "tests/tlib.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

/* A message from sender to rcpt on s; its envelope in *env (addresses
 * and id), results unset. 0 or -1. */
static int mk_msg(struct q_spool *s, const char *sender, const char *rcpt,
		  struct q_env *env, struct q_rcpt *rc)
{
	static const char data[] = "From: a@sender.test\r\nSubject: hi\r\n"
				   "Message-ID: <orig@sender.test>\r\n\r\nbody\r\n";
	const char *rcpts[1] = {rcpt};
	struct q_newmsg m = {sender, rcpts, 1, data, sizeof(data) - 1, 0};
	const char *err = NULL;

	memset(env, 0, sizeof(*env));
	memset(rc, 0, sizeof(*rc));
	if (q_spool_create(s, &m, Q_CREATE_NOSYNC, env->id, &err) < 0) {
		fprintf(stderr, "\nq_spool_create: %s\n", err);
		return -1;
	}
	env->sender = (char *)sender;
	env->arrival = 1700000000;
	env->nrcpt = 1;
	env->rcpt = rc;
	rc->addr = (char *)rcpt;
	rc->state = Q_RCPT_FAILED;
	return 0;
}

/* The bounce of env's recipients [0, n): its -D file (malloc'd), NULL
 * when none was queued. */
static char *bounce(struct q_spool *s, const struct q_env *env, size_t n)
{
	size_t failed[8];
	char bid[Q_ID_LEN + 1], path[PATH_MAX];
	const char *err = NULL;

	for (size_t i = 0; i < n && i < 8; i++)
		failed[i] = i;
	if (q_dsn_queue(s, env, failed, n, "mx.qkit.test", bid, &err) < 0) {
		fprintf(stderr, "\nq_dsn_queue: %s\n", err);
		return NULL;
	}
	if (bid[0] == '\0')
		return NULL;
	q_spool_path(s, bid, 'D', path, sizeof(path));
	return t_read_file(path, NULL);
}

/* The first line of text starting with field ("Status: "), without its
 * CRLF, in buf; "" when there is none. */
static const char *line_of(const char *text, const char *field, char *buf,
			   size_t size)
{
	size_t fl = strlen(field);
	buf[0] = '\0';
	for (const char *l = text; l && *l;) {
		const char *e = strstr(l, "\r\n");
		size_t len = e ? (size_t)(e - l) : strlen(l);
		if (len >= fl && strncmp(l, field, fl) == 0) {
			snprintf(buf, size, "%.*s", (int)len, l);
			return buf;
		}
		l = e ? e + 2 : NULL;
	}
	return buf;
}

/* ---- one failed recipient: Status, Diagnostic-Code, Remote-MTA ---- */

struct rcase {
	const char *what;
	int code;                /* last_code */
	const char *host;        /* NULL: none */
	const char *text;        /* last_error */
	const char *status;      /* the whole Status line */
	const char *diag;        /* the whole Diagnostic-Code line */
	const char *human;       /* its line in the text part, trimmed */
};

static const struct rcase rcases[] = {
	/* a reply to RCPT (stored without its code) */
	{"RCPT 550 5.1.1", 550, "mx.d.test", "5.1.1 <x@d.test> no such user",
	 "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 <x@d.test> no such user",
	 "host mx.d.test: 550 5.1.1 <x@d.test> no such user"},
	{"RCPT 550, no enhanced code", 550, "mx.d.test", "no such user",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 550 no such user",
	 "host mx.d.test: 550 no such user"},
	/* RFC 3463: class.subject.detail, 1-3 digits each */
	{"enhanced code with two parts", 553, "mx.d.test", "5.1 short",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 553 5.1 short",
	 "host mx.d.test: 553 5.1 short"},
	{"enhanced detail of 5 digits", 554, "mx.d.test", "5.7.12345 policy",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 554 5.7.12345 policy",
	 "host mx.d.test: 554 5.7.12345 policy"},
	{"enhanced subject of 4 digits", 554, "mx.d.test", "5.1000.1 policy",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 554 5.1000.1 policy",
	 "host mx.d.test: 554 5.1000.1 policy"},
	{"enhanced code of 3-digit parts", 554, "mx.d.test", "5.123.456 x",
	 "Status: 5.123.456", "Diagnostic-Code: smtp; 554 5.123.456 x",
	 "host mx.d.test: 554 5.123.456 x"},
	{"enhanced code glued to text", 550, "mx.d.test", "5.1.1x no",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 550 5.1.1x no",
	 "host mx.d.test: 550 5.1.1x no"},
	{"enhanced code of another class", 550, "mx.d.test", "4.2.1 full",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 550 4.2.1 full",
	 "host mx.d.test: 550 4.2.1 full"},
	{"enhanced code alone", 550, "mx.d.test", "5.7.1",
	 "Status: 5.7.1", "Diagnostic-Code: smtp; 550 5.7.1",
	 "host mx.d.test: 550 5.7.1"},
	/* a reply that ended the dialogue: the stage before it */
	{"MAIL refused", 550, "mx.d.test",
	 "MAIL FROM refused: 550 5.7.1 sender rejected",
	 "Status: 5.7.1", "Diagnostic-Code: smtp; 550 5.7.1 sender rejected",
	 "host mx.d.test: MAIL FROM refused: 550 5.7.1 sender rejected"},
	{"MAIL refused, no enhanced code", 553, "mx.d.test",
	 "MAIL FROM refused: 553 sender rejected",
	 "Status: 5.0.0", "Diagnostic-Code: smtp; 553 sender rejected",
	 "host mx.d.test: MAIL FROM refused: 553 sender rejected"},
	{"banner 554 (past the cutoff)", 554, "mx.d.test",
	 "connection refused by banner: 554 5.7.1 go away",
	 "Status: 5.7.1", "Diagnostic-Code: smtp; 554 5.7.1 go away",
	 "host mx.d.test: connection refused by banner: 554 5.7.1 go away"},
	{"banner 421 (past the cutoff)", 421, "mx.d.test",
	 "connection refused by banner: 421 4.3.2 busy",
	 "Status: 5.4.7", "Diagnostic-Code: smtp; 421 4.3.2 busy",
	 "host mx.d.test: connection refused by banner: 421 4.3.2 busy"},
	{"stage with another code: not a stage", 550, "mx.d.test",
	 "User unknown: 551 5.1.6 moved",
	 "Status: 5.1.6", "Diagnostic-Code: smtp; 550 User unknown: 551 5.1.6 moved",
	 "host mx.d.test: 550 User unknown: 551 5.1.6 moved"},
	/* the enhanced code later in the text, and of the reply's class */
	{"enhanced code after words", 550, "mx.d.test",
	 "Requested action not taken: 5.1.1 mailbox unavailable",
	 "Status: 5.1.1",
	 "Diagnostic-Code: smtp; 550 Requested action not taken: 5.1.1 mailbox unavailable",
	 "host mx.d.test: 550 Requested action not taken: 5.1.1 mailbox unavailable"},
	{"first code of class 5", 552, "mx.d.test", "4.2.2 then 5.2.2 full",
	 "Status: 5.2.2", "Diagnostic-Code: smtp; 552 4.2.2 then 5.2.2 full",
	 "host mx.d.test: 552 4.2.2 then 5.2.2 full"},
	{"multi-line reply", 550, "mx.d.test", "5.1.1 no such user\n5.1.1 see the FAQ",
	 "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 no such user 5.1.1 see the FAQ",
	 "host mx.d.test: 550 5.1.1 no such user 5.1.1 see the FAQ"},
	/* no reply: routing (the runner's "domain: " before the router's
	   text, the domain as the host), local refusals, retry timeouts */
	{"null MX", 0, "d.test",
	 "d.test: d.test: the domain accepts no mail (null MX, RFC 7505)",
	 "Status: 5.1.10",
	 "Diagnostic-Code: X-qkit; d.test: d.test: the domain accepts no mail (null MX, RFC 7505)",
	 "host d.test: d.test: d.test: the domain accepts no mail (null MX, RFC 7505)"},
	{"NXDOMAIN", 0, "d.test", "d.test: d.test: MX lookup: NXDOMAIN",
	 "Status: 5.1.2", "Diagnostic-Code: X-qkit; d.test: d.test: MX lookup: NXDOMAIN",
	 "host d.test: d.test: d.test: MX lookup: NXDOMAIN"},
	{".invalid", 0, "x.invalid",
	 "x.invalid: x.invalid: domain does not exist (.invalid, RFC 6761)",
	 "Status: 5.1.2",
	 "Diagnostic-Code: X-qkit; x.invalid: x.invalid: domain does not exist (.invalid, RFC 6761)",
	 "host x.invalid: x.invalid: x.invalid: domain does not exist (.invalid, RFC 6761)"},
	{"no MX, no address", 0, "d.test",
	 "d.test: d.test: domain has no MX or address records",
	 "Status: 5.1.2",
	 "Diagnostic-Code: X-qkit; d.test: d.test: domain has no MX or address records",
	 "host d.test: d.test: d.test: domain has no MX or address records"},
	{"invalid domain", 0, "a..b", "a..b: a..b: not a valid domain name",
	 "Status: 5.1.2", "Diagnostic-Code: X-qkit; a..b: a..b: not a valid domain name",
	 "host a..b: a..b: a..b: not a valid domain name"},
	{"MX host not found", 0, "d.test", "d.test: mx.d.test: host not found",
	 "Status: 5.4.4", "Diagnostic-Code: X-qkit; d.test: mx.d.test: host not found",
	 "host d.test: d.test: mx.d.test: host not found"},
	{"MX to IP addresses", 0, "d.test",
	 "d.test: d.test: MX records point to IP addresses, not host names",
	 "Status: 5.4.4",
	 "Diagnostic-Code: X-qkit; d.test: d.test: MX records point to IP addresses, not host names",
	 "host d.test: d.test: d.test: MX records point to IP addresses, not host names"},
	{"bad recipient address", 0, "mx.d.test",
	 "recipient address with control characters or too long",
	 "Status: 5.1.3",
	 "Diagnostic-Code: X-qkit; recipient address with control characters or too long",
	 "host mx.d.test: recipient address with control characters or too long"},
	{"lookup failing until the cutoff", 0, "d.test",
	 "d.test: d.test: MX lookup: SERVFAIL or timeout",
	 "Status: 5.4.7", "Diagnostic-Code: X-qkit; d.test: d.test: MX lookup: SERVFAIL or timeout",
	 "host d.test: d.test: d.test: MX lookup: SERVFAIL or timeout"},
	{"connection refused until the cutoff", 0, "mx.d.test",
	 "connection refused by 127.0.0.1 port 25",
	 "Status: 5.4.7", "Diagnostic-Code: X-qkit; connection refused by 127.0.0.1 port 25",
	 "host mx.d.test: connection refused by 127.0.0.1 port 25"},
	{"4xx until the cutoff", 451, "mx.d.test", "4.7.1 greylisted",
	 "Status: 5.4.7", "Diagnostic-Code: smtp; 451 4.7.1 greylisted",
	 "host mx.d.test: 451 4.7.1 greylisted"},
};

static void test_rcpt_table(void)
{
	struct q_spool *s = t_new_spool();
	CU_ASSERT_FATAL(s != NULL);
	for (size_t i = 0; i < sizeof(rcases) / sizeof(rcases[0]); i++) {
		const struct rcase *c = &rcases[i];
		struct q_env env;
		struct q_rcpt rc;
		char buf[1200], buf2[1200];

		CU_ASSERT_FATAL(mk_msg(s, "a@sender.test", "x@d.test", &env, &rc) == 0);
		rc.last_code = c->code;
		rc.host = (char *)c->host;
		rc.last_error = (char *)c->text;
		rc.last_time = 1700000100;
		char *b = bounce(s, &env, 1);
		CU_ASSERT_PTR_NOT_NULL_FATAL(b);
		bool ok = true;
#define CHECK(cond) do { CU_ASSERT(cond); ok = ok && (cond); } while (0)
		CHECK(strcmp(line_of(b, "Status: ", buf, sizeof(buf)), c->status) == 0);
		CHECK(strcmp(line_of(b, "Diagnostic-Code: ", buf, sizeof(buf)), c->diag) == 0);
		CHECK(strcmp(line_of(b, "Action: ", buf, sizeof(buf)), "Action: failed") == 0);
		snprintf(buf2, sizeof(buf2), "Remote-MTA: dns; %s", c->host);
		CHECK(strcmp(line_of(b, "Remote-MTA: ", buf, sizeof(buf)),
			     c->code ? buf2 : "") == 0);
		snprintf(buf2, sizeof(buf2), "    %s", c->human);
		CHECK(strcmp(line_of(b, "    host ", buf, sizeof(buf)), buf2) == 0);
		CHECK(strcmp(line_of(b, "Final-Recipient: ", buf, sizeof(buf)),
			     "Final-Recipient: rfc822; x@d.test") == 0);
		if (!ok)
			fprintf(stderr, "\ncase %zu (%s): %s / %s\n", i, c->what,
				line_of(b, "Status: ", buf, sizeof(buf)),
				line_of(b, "Diagnostic-Code: ", buf2, sizeof(buf2)));
#undef CHECK
		free(b);
	}
	q_spool_close(&s);
}

/* ---- two bounces of one message (two runs): two Message-IDs ---- */

static void test_message_id(void)
{
	struct q_spool *s = t_new_spool();
	struct q_env env;
	struct q_rcpt rc;
	char m1[1200], m2[1200];

	CU_ASSERT_FATAL(s != NULL);
	CU_ASSERT_FATAL(mk_msg(s, "a@sender.test", "x@d.test", &env, &rc) == 0);
	rc.last_code = 550;
	rc.last_error = "5.1.1 no such user";
	char *b1 = bounce(s, &env, 1);
	char *b2 = bounce(s, &env, 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b2);
	line_of(b1, "Message-ID: ", m1, sizeof(m1));
	line_of(b2, "Message-ID: ", m2, sizeof(m2));
	CU_ASSERT(strncmp(m1, "Message-ID: <", 13) == 0);
	CU_ASSERT(m1[strlen(m1) - 1] == '>');
	CU_ASSERT(strstr(m1, "@mx.qkit.test>") != NULL);
	CU_ASSERT(strcmp(m1, m2) != 0);
	if (strcmp(m1, m2) == 0)
		fprintf(stderr, "\ntwo bounces, one %s\n", m1);
	free(b1);
	free(b2);
	q_spool_close(&s);
}

/* ---- addresses the SMTP client refuses: the bounce still goes, its
 * lines under 998 octets, no header line injected ---- */

static void test_bad_addresses(void)
{
	struct q_spool *s = t_new_spool();
	char longa[1200];
	const char *addrs[] = {longa, "x@d.test\nAction: delivered",
			       "x@d.test\r\nStatus: 2.0.0"};

	CU_ASSERT_FATAL(s != NULL);
	memset(longa, 'a', sizeof(longa) - 10);
	snprintf(longa + sizeof(longa) - 10, 10, "@d.test");
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct q_env env;
		struct q_rcpt rc;
		char buf[1200];

		CU_ASSERT_FATAL(mk_msg(s, addrs[i], addrs[i], &env, &rc) == 0);
		rc.last_error = "recipient address with control characters "
				"or too long";
		rc.host = "mx.d.test";
		char *b = bounce(s, &env, 1);
		CU_ASSERT_PTR_NOT_NULL(b);
		if (b == NULL)
			continue;
		size_t longest = 0;
		for (const char *l = b, *e; (e = strstr(l, "\r\n")) != NULL; l = e + 2)
			if ((size_t)(e - l) > longest)
				longest = (size_t)(e - l);
		CU_ASSERT(longest <= 998);
		CU_ASSERT(strstr(b, "\r\nAction: delivered") == NULL);
		CU_ASSERT(strstr(b, "\r\nStatus: 2.0.0") == NULL);
		CU_ASSERT_STRING_EQUAL(line_of(b, "Action: ", buf, sizeof(buf)),
				       "Action: failed");
		CU_ASSERT_STRING_EQUAL(line_of(b, "Status: ", buf, sizeof(buf)),
				       "Status: 5.1.3");
		CU_ASSERT(strncmp(line_of(b, "Final-Recipient: ", buf, sizeof(buf)),
				  "Final-Recipient: rfc822; ", 25) == 0);
		free(b);
	}
	q_spool_close(&s);
}

void suite_dsn(void)
{
	CU_pSuite s = CU_add_suite("dsn", NULL, NULL);

	CU_add_test(s, "Status and Diagnostic-Code of one recipient (table)",
		    test_rcpt_table);
	CU_add_test(s, "two bounces of one message: two Message-IDs",
		    test_message_id);
	CU_add_test(s, "long and control-character addresses: lines <= 998",
		    test_bad_addresses);
}
