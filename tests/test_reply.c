/*
 * tests/test_reply.c - suite_reply: the SMTP reply parser (q_reply_*).
 *
 * Every case of the table is fed whole, byte by byte and in pieces of
 * every size 1..7; each feeding must give the same outcome and consume
 * exactly the reply. Then the edges: line and line-count limits, a
 * 100 KB reply, an endless multi-line reply and an endless line (both
 * errors, in bounded memory), replies back to back, incomplete input,
 * the error state and reset.
 */
#include "config.h"
#include "q/smtp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

struct rcase {
	const char *in;
	int code;              /* 0: an error is expected */
	size_t nlines;
	const char *text;
	const char *enh;
	const char *err;       /* substring of the error text */
};

static const struct rcase cases[] = {
	/* good */
	{ "250 ok\r\n", 250, 1, "ok", "", NULL },
	{ "250 ok\n", 250, 1, "ok", "", NULL },
	{ "250\r\n", 250, 1, "", "", NULL },
	{ "250\n", 250, 1, "", "", NULL },
	{ "220 mx.example ESMTP ready\r\n", 220, 1, "mx.example ESMTP ready",
	  "", NULL },
	{ "250-first\r\n250-second\r\n250 last\r\n", 250, 3,
	  "first\nsecond\nlast", "", NULL },
	{ "250-a\n250-b\r\n250 c\n", 250, 3, "a\nb\nc", "", NULL },
	{ "550 5.1.1 <x@y>: user unknown\r\n", 550, 1,
	  "5.1.1 <x@y>: user unknown", "5.1.1", NULL },
	{ "451 4.7.1 try later\r\n", 451, 1, "4.7.1 try later", "4.7.1", NULL },
	{ "250 2.0.0\r\n", 250, 1, "2.0.0", "2.0.0", NULL },
	{ "550 4.1.1 class mismatch\r\n", 550, 1, "4.1.1 class mismatch", "",
	  NULL },
	{ "250 2.1.1000 four digits\r\n", 250, 1, "2.1.1000 four digits", "",
	  NULL },
	{ "250 2.1 short\r\n", 250, 1, "2.1 short", "", NULL },
	{ "250 2.1.5x\r\n", 250, 1, "2.1.5x", "", NULL },
	{ "250-2.1.0 first\r\n250 2.1.0 second\r\n", 250, 2,
	  "2.1.0 first\n2.1.0 second", "2.1.0", NULL },
	{ "552 5.3.4 message too big\r\n", 552, 1, "5.3.4 message too big",
	  "5.3.4", NULL },
	{ "354 go ahead\r\n", 354, 1, "go ahead", "", NULL },
	{ "221 bye\r\n", 221, 1, "bye", "", NULL },
	{ "250 text with\rCR inside\r\n", 250, 1, "text with\rCR inside", "",
	  NULL },
	{ "250 ends with CR CR\r\r\n", 250, 1, "ends with CR CR\r", "", NULL },
	{ "250-\r\n250 \r\n", 250, 2, "\n", "", NULL },
	{ "599 top\r\n", 599, 1, "top", "", NULL },
	{ "200 bottom\r\n", 200, 1, "bottom", "", NULL },
	{ "250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n", 250, 3,
	  "PIPELINING\nSIZE 10240000\n8BITMIME", "", NULL },
	{ "421 4.3.2 closing\r\n", 421, 1, "4.3.2 closing", "4.3.2", NULL },
	{ "250  two spaces\r\n", 250, 1, " two spaces", "", NULL },
	{ "250-x\r\n250\r\n", 250, 2, "x\n", "", NULL },
	/* bad */
	{ "25 ok\r\n", 0, 0, NULL, NULL, "three digits" },
	{ "2500 ok\r\n", 0, 0, NULL, NULL, "three digits" },
	{ "abc ok\r\n", 0, 0, NULL, NULL, "three digits" },
	{ " 250 ok\r\n", 0, 0, NULL, NULL, "three digits" },
	{ "2\n", 0, 0, NULL, NULL, "three digits" },
	{ "150 ok\r\n", 0, 0, NULL, NULL, "outside 2xx-5xx" },
	{ "650 ok\r\n", 0, 0, NULL, NULL, "outside 2xx-5xx" },
	{ "050 ok\r\n", 0, 0, NULL, NULL, "outside 2xx-5xx" },
	{ "250-a\r\n251 b\r\n", 0, 0, NULL, NULL, "mixed" },
	{ "250-a\r\n550 b\r\n", 0, 0, NULL, NULL, "mixed" },
	{ "250-a\r\n250-b\r\n451-c\r\n", 0, 0, NULL, NULL, "mixed" },
	{ "250x ok\r\n", 0, 0, NULL, NULL, "followed by" },
	{ "250\tok\r\n", 0, 0, NULL, NULL, "followed by" },
	{ "250-ok\r\n250x\r\n", 0, 0, NULL, NULL, "followed by" },
	{ "250.ok\r\n", 0, 0, NULL, NULL, "followed by" },
	{ "\r\n", 0, 0, NULL, NULL, "empty line" },
	{ "\n", 0, 0, NULL, NULL, "empty line" },
	{ "250-a\r\n\r\n", 0, 0, NULL, NULL, "empty line" },
	{ "2a0 ok\r\n", 0, 0, NULL, NULL, "three digits" },
};

/* Feed s in pieces of `piece` bytes (0 = whole). Returns done (1/-1, or
 * 0 when the input ran out), the bytes consumed, the reply and error. */
static int feed(struct q_reply_parser *p, const char *s, size_t len,
		size_t piece, struct q_reply *r, size_t *used_r,
		const char **err_r)
{
	size_t off = 0;
	int done = 0;

	*used_r = 0;
	while (off < len) {
		size_t n = piece == 0 || len - off < piece ? len - off : piece;
		size_t used = q_reply_feed(p, s + off, n, r, &done, err_r);

		CU_ASSERT_FATAL(used <= n);
		*used_r += used;
		if (done != 0)
			return done;
		/* without an outcome, every byte offered is consumed */
		CU_ASSERT_EQUAL_FATAL(used, n);
		off += n;
	}
	return done;
}

static void check_case(const struct rcase *c, size_t piece)
{
	struct q_reply_parser *p = q_reply_parser_new();
	struct q_reply *r = calloc(1, sizeof(*r));
	const char *err = NULL;
	size_t used, len = strlen(c->in);
	int done;

	CU_ASSERT_FATAL(p != NULL && r != NULL);
	done = feed(p, c->in, len, piece, r, &used, &err);
	if (c->code != 0) {
		CU_ASSERT_EQUAL(done, 1);
		CU_ASSERT_EQUAL(used, len);
		CU_ASSERT_EQUAL(r->code, c->code);
		CU_ASSERT_EQUAL(r->nlines, c->nlines);
		CU_ASSERT_EQUAL(r->textlen, strlen(c->text));
		CU_ASSERT_STRING_EQUAL(r->text, c->text);
		CU_ASSERT_STRING_EQUAL(r->enh, c->enh);
		if (done != 1 || strcmp(r->text, c->text) != 0)
			fprintf(stderr, "\ncase %s piece %zu: done %d text "
				"'%s'\n", c->in, piece, done, r->text);
	} else {
		CU_ASSERT_EQUAL(done, -1);
		CU_ASSERT_PTR_NOT_NULL(err);
		if (err != NULL) {
			CU_ASSERT_PTR_NOT_NULL(strstr(err, c->err));
			if (strstr(err, c->err) == NULL)
				fprintf(stderr, "\ncase %s: error '%s'\n",
					c->in, err);
		}
	}
	q_reply_parser_free(&p);
	CU_ASSERT_PTR_NULL(p);
	free(r);
}

static void test_table(void)
{
	size_t i, piece;

	CU_ASSERT(sizeof(cases) / sizeof(cases[0]) >= 30);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (piece = 0; piece <= 7; piece++)
			check_case(&cases[i], piece);
}

/* Two replies in one buffer: the first stops right after its LF. */
static void test_back_to_back(void)
{
	static const char in[] = "250-a\r\n250 b\r\n354 go\r\n221 bye\n";
	struct q_reply_parser *p = q_reply_parser_new();
	struct q_reply *r = calloc(1, sizeof(*r));
	size_t off = 0, used;
	int done;
	const char *err;

	used = q_reply_feed(p, in, strlen(in), r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_EQUAL(used, 14);
	CU_ASSERT_EQUAL(r->code, 250);
	CU_ASSERT_STRING_EQUAL(r->text, "a\nb");
	off += used;
	used = q_reply_feed(p, in + off, strlen(in) - off, r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_EQUAL(r->code, 354);
	CU_ASSERT_STRING_EQUAL(r->text, "go");
	CU_ASSERT_EQUAL(r->nlines, 1);
	off += used;
	used = q_reply_feed(p, in + off, strlen(in) - off, r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_EQUAL(r->code, 221);
	CU_ASSERT_EQUAL(off + used, strlen(in));
	/* an incomplete reply: consumed, no outcome yet */
	used = q_reply_feed(p, "250-more\r\n250 x", 15, r, &done, &err);
	CU_ASSERT_EQUAL(done, 0);
	CU_ASSERT_EQUAL(used, 15);
	used = q_reply_feed(p, "y\r", 2, r, &done, &err);
	CU_ASSERT_EQUAL(done, 0);
	used = q_reply_feed(p, "\n", 1, r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_STRING_EQUAL(r->text, "more\nxy");
	/* reset drops a partial reply */
	used = q_reply_feed(p, "451-partial\r\n", 13, r, &done, &err);
	CU_ASSERT_EQUAL(done, 0);
	q_reply_parser_reset(p);
	used = q_reply_feed(p, "250 fresh\r\n", 11, r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_EQUAL(r->code, 250);
	CU_ASSERT_EQUAL(r->nlines, 1);
	q_reply_parser_free(&p);
	free(r);
}

/* After an error the parser stays in error until reset. */
static void test_error_state(void)
{
	struct q_reply_parser *p = q_reply_parser_new();
	struct q_reply *r = calloc(1, sizeof(*r));
	const char *err = NULL;
	size_t used;
	int done;

	used = q_reply_feed(p, "250-a\r\n550 b\r\n", 14, r, &done, &err);
	CU_ASSERT_EQUAL(done, -1);
	CU_ASSERT(used < 14);
	err = NULL;
	used = q_reply_feed(p, "250 ok\r\n", 8, r, &done, &err);
	CU_ASSERT_EQUAL(done, -1);
	CU_ASSERT_EQUAL(used, 0);
	CU_ASSERT_PTR_NOT_NULL(err);
	q_reply_parser_reset(p);
	used = q_reply_feed(p, "250 ok\r\n", 8, r, &done, &err);
	CU_ASSERT_EQUAL(done, 1);
	CU_ASSERT_EQUAL(used, 8);
	q_reply_parser_free(&p);
	q_reply_parser_free(&p);     /* NULL: harmless */
	free(r);
}

static char *make_line(const char *prefix, size_t content, const char *eol)
{
	size_t pl = strlen(prefix), el = strlen(eol);
	char *s = malloc(content + el + 1);

	memcpy(s, prefix, pl);
	memset(s + pl, 'x', content - pl);
	memcpy(s + content, eol, el + 1);
	return s;
}

static int feed_all(const char *s, size_t len, size_t piece,
		    struct q_reply *r, const char **err)
{
	struct q_reply_parser *p = q_reply_parser_new();
	size_t used;
	int done = feed(p, s, len, piece, r, &used, err);

	q_reply_parser_free(&p);
	return done;
}

static void test_line_limits(void)
{
	struct q_reply *r = calloc(1, sizeof(*r));
	const char *err;
	char *s;
	size_t piece;

	for (piece = 0; piece <= 7; piece += 7) {
		/* exactly Q_REPLY_MAX_LINE bytes (code included): fine,
		 * with CRLF or LF */
		s = make_line("250 ", Q_REPLY_MAX_LINE, "\r\n");
		CU_ASSERT_EQUAL(feed_all(s, strlen(s), piece, r, &err), 1);
		CU_ASSERT_EQUAL(r->textlen, Q_REPLY_MAX_LINE - 4);
		CU_ASSERT_EQUAL(r->text[r->textlen - 1], 'x');
		free(s);
		s = make_line("250 ", Q_REPLY_MAX_LINE, "\n");
		CU_ASSERT_EQUAL(feed_all(s, strlen(s), piece, r, &err), 1);
		free(s);
		/* one more: error */
		s = make_line("250 ", Q_REPLY_MAX_LINE + 1, "\r\n");
		err = NULL;
		CU_ASSERT_EQUAL(feed_all(s, strlen(s), piece, r, &err), -1);
		CU_ASSERT(err != NULL && strstr(err, "too long") != NULL);
		free(s);
		s = make_line("250 ", Q_REPLY_MAX_LINE + 1, "\n");
		CU_ASSERT_EQUAL(feed_all(s, strlen(s), piece, r, &err), -1);
		free(s);
		/* a CR inside the limit that is text, then a too long line */
		s = make_line("250 ", Q_REPLY_MAX_LINE + 1, "\r\n");
		s[Q_REPLY_MAX_LINE] = '\r';
		CU_ASSERT_EQUAL(feed_all(s, strlen(s), piece, r, &err), -1);
		free(s);
	}
	free(r);
}

/* Q_REPLY_MAX_LINES lines are fine, one more is an error. */
static void test_line_count(void)
{
	static char s[16 * (Q_REPLY_MAX_LINES + 2)];
	struct q_reply *r = calloc(1, sizeof(*r));
	size_t i, n;
	const char *err;

	CU_ASSERT_FATAL(r != NULL);
	for (n = Q_REPLY_MAX_LINES; n <= Q_REPLY_MAX_LINES + 1; n++) {
		size_t len = 0;

		for (i = 0; i < n; i++) {
			memcpy(s + len, i + 1 < n ? "250-l" : "250 l", 5);
			s[len + 5] = (char)('0' + i / 100);
			s[len + 6] = (char)('0' + i / 10 % 10);
			s[len + 7] = (char)('0' + i % 10);
			memcpy(s + len + 8, "\r\n", 2);
			len += 10;
		}
		err = NULL;
		if (n == Q_REPLY_MAX_LINES) {
			CU_ASSERT_EQUAL(feed_all(s, len, 3, r, &err), 1);
			CU_ASSERT_EQUAL(r->nlines, n);
		} else {
			CU_ASSERT_EQUAL(feed_all(s, len, 3, r, &err), -1);
			CU_ASSERT(err != NULL && strstr(err, "too many") != NULL);
		}
	}
	free(r);
}

/* A 100 KB reply (50 lines of 2000 bytes) is valid; its text is cut at
 * Q_REPLY_MAX_TEXT - 1 bytes. */
static void test_big_reply(void)
{
	struct q_reply *r = calloc(1, sizeof(*r));
	size_t i, len = 0, piece;
	char *s = malloc(51 * 2002 + 1);
	const char *err;

	for (i = 0; i < 50; i++) {
		memcpy(s + len, i < 49 ? "250-" : "250 ", 4);
		memset(s + len + 4, 'a' + (char)(i % 26), 1996);
		memcpy(s + len + 2000, "\r\n", 2);
		len += 2002;
	}
	CU_ASSERT(len >= 100000);
	for (piece = 0; piece <= 7; piece++) {
		memset(r, 0, sizeof(*r));
		CU_ASSERT_EQUAL(feed_all(s, len, piece == 0 ? 0 : piece * 997,
					 r, &err), 1);
		CU_ASSERT_EQUAL(r->code, 250);
		CU_ASSERT_EQUAL(r->nlines, 50);
		CU_ASSERT_EQUAL(r->textlen, Q_REPLY_MAX_TEXT - 1);
		CU_ASSERT_EQUAL(strlen(r->text), Q_REPLY_MAX_TEXT - 1);
		CU_ASSERT_EQUAL(r->text[0], 'a');
		CU_ASSERT_EQUAL(r->text[1996], '\n');
		CU_ASSERT_EQUAL(r->text[1997], 'b');
	}
	free(s);
	free(r);
}

/* A multi-line reply that never ends, fed forever: an error comes after
 * Q_REPLY_MAX_LINES lines, memory stays the parser's struct. The same
 * for a line that never ends. */
static void test_endless(void)
{
	static const char line[] = "250-this never ends\r\n";
	struct q_reply_parser *p = q_reply_parser_new();
	struct q_reply *r = calloc(1, sizeof(*r));
	size_t total = 0, i, used;
	int done = 0;
	const char *err = NULL;
	char junk[512];

	for (i = 0; i < 100000 && done == 0; i++) {
		used = q_reply_feed(p, line, sizeof(line) - 1, r, &done, &err);
		total += used;
	}
	CU_ASSERT_EQUAL(done, -1);
	CU_ASSERT(err != NULL && strstr(err, "too many") != NULL);
	CU_ASSERT(total <= (Q_REPLY_MAX_LINES + 1) * (sizeof(line) - 1));
	CU_ASSERT(i <= Q_REPLY_MAX_LINES + 1);

	q_reply_parser_reset(p);
	memset(junk, 'z', sizeof(junk));
	used = q_reply_feed(p, "250 ", 4, r, &done, &err);
	total = 0;
	for (i = 0; i < 100000 && done == 0; i++)
		total += q_reply_feed(p, junk, sizeof(junk), r, &done, &err);
	CU_ASSERT_EQUAL(done, -1);
	CU_ASSERT(err != NULL && strstr(err, "too long") != NULL);
	CU_ASSERT(total <= Q_REPLY_MAX_LINE + sizeof(junk));
	q_reply_parser_free(&p);
	free(r);
}

void suite_reply(void)
{
	CU_pSuite s = CU_add_suite("reply", NULL, NULL);

	CU_add_test(s, "table, whole / bytewise / pieces 2..7", test_table);
	CU_add_test(s, "back to back, incomplete, reset", test_back_to_back);
	CU_add_test(s, "error state sticks until reset", test_error_state);
	CU_add_test(s, "line length limit", test_line_limits);
	CU_add_test(s, "line count limit", test_line_count);
	CU_add_test(s, "100 KB reply", test_big_reply);
	CU_add_test(s, "endless reply or line: bounded error", test_endless);
}
