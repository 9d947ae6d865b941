/*
 * tests/test_addr.c - q_addr: RFC 5321 address checks (with the length
 * limits exactly at and over), domains, the message canonical form
 * (line ends, dot-stuffing, NUL and long lines), unstuffing, and the
 * To/Cc/Bcc recipients of `submit -t`. Table-driven.
 */
#include "config.h"
#include "q/addr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* err == NULL: valid; else a substring of the error text */
static const struct {
	const char *addr;
	const char *err;
} addr_cases[] = {
	/* valid */
	{ "user@example.com", NULL },
	{ "a@b", NULL },
	{ "postmaster@localhost", NULL },
	{ "first.last@example.com", NULL },
	{ "user+tag@example.com", NULL },
	{ "!#$%&'*+-/=?^_`{|}~@example.com", NULL },
	{ "a.b.c@d.e.f", NULL },
	{ "USER@EXAMPLE.COM", NULL },
	{ "user@xn--bcher-kva.example", NULL },
	{ "user@123.example", NULL },
	{ "user@a-b--c.example", NULL },
	{ "u@1.2.3.4", NULL },
	{ "\"john doe\"@example.com", NULL },
	{ "\"a\\\"b\"@example.com", NULL },
	{ "\"a@b\"@example.com", NULL },
	{ "\"a..b.\"@example.com", NULL },
	{ "\"\"@example.com", NULL },
	{ "user@[192.0.2.1]", NULL },
	{ "user@[IPv6:2001:db8::1]", NULL },
	{ "user@[ipv6:::1]", NULL },
	{ "user@[IPv6:::ffff:192.0.2.1]", NULL },
	/* invalid */
	{ "", "empty address" },
	{ "userexample.com", "no @domain" },
	{ "\"quoted\"", "no @domain" },
	{ "@example.com", "empty local part" },
	{ "user@", "empty domain" },
	{ "user@@example.com", "bad character '@' at position 6" },
	{ "a@b@c", "bad character '@' at position 4" },
	{ ".user@example.com", "local part starts with a dot" },
	{ "user.@example.com", "local part ends with a dot" },
	{ "us..er@example.com", "two dots in a row in the local part" },
	{ "us er@example.com", "space at position 3" },
	{ "user,@example.com", "bad character ',' at position 5" },
	{ "<user@example.com>", "bad character '<' at position 1" },
	{ "user@example.com>", "bad character '>' at position 17" },
	{ "user(c)@example.com", "bad character '(' at position 5" },
	{ "a\\b@example.com", "bad character '\\' at position 2" },
	{ "user@exa_mple.com", "bad character '_' at position 9" },
	{ "user@ex\tample.com", "bad character \\x09 at position 8" },
	{ "us\xc3\xa9r@example.com", "non-ASCII byte 0xc3 at position 3" },
	{ "user@b\xc3\xbc" "cher.example", "non-ASCII byte 0xc3 at position 7" },
	{ "user@-example.com", "domain label starts with a hyphen" },
	{ "user@example-.com", "domain label ends with a hyphen" },
	{ "user@a.-b.com", "domain label starts with a hyphen" },
	{ "user@example..com", "empty domain label" },
	{ "user@.example.com", "domain starts with a dot" },
	{ "user@example.com.", "domain ends with a dot" },
	{ "user@[192.0.2.256]", "bad IPv4 address literal" },
	{ "user@[192.0.2]", "bad IPv4 address literal" },
	{ "user@[192.0.2.1", "without ']'" },
	{ "user@[192.0.2.1]x", "bad character 'x' at position 17" },
	{ "user@[IPv6:2001:db8::g]", "bad IPv6 address literal" },
	{ "user@[IPv6:192.0.2.1]", "bad IPv6 address literal" },
	{ "user@[2001:db8::1]", "unsupported address literal" },
	{ "user@[x400:anything]", "unsupported address literal" },
	{ "user@[]", "empty address literal" },
	{ "\"unterminated@example.com", "unterminated quoted string" },
	{ "\"a\"b@example.com", "'@' expected after the quoted local part" },
	{ "\"a\x01\"@example.com", "bad character \\x01 at position 3" },
	{ "\"a\\\x7f\"@example.com", "bad character \\x7f at position 4" },
};

static char *rep(char c, size_t n)
{
	char *s = malloc(n + 1);

	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* a domain of exactly n octets made of labels of at most 50 */
static char *domain_of(size_t n)
{
	char *s = rep('d', n);
	size_t i;

	for (i = 50; i < n - 1; i += 51)
		s[i] = '.';
	return s;
}

static void check_one(const char *addr, const char *want_err)
{
	const char *err = NULL;
	int r = q_addr_check(addr, false, &err);

	if ((want_err == NULL) != (r == 0) ||
	    (want_err != NULL && (err == NULL || strstr(err, want_err) == NULL)))
		fprintf(stderr, "\n  q_addr_check(\"%.80s\") = %d \"%s\", "
			"wanted %s\n", addr, r, r ? err : "",
			want_err ? want_err : "valid");
	if (want_err == NULL) {
		CU_ASSERT_EQUAL(r, 0);
	} else {
		CU_ASSERT_EQUAL(r, -1);
		CU_ASSERT_PTR_NOT_NULL_FATAL(err);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, want_err));
	}
}

static void test_addr_table(void)
{
	size_t i;

	CU_ASSERT(N(addr_cases) >= 40);
	for (i = 0; i < N(addr_cases); i++)
		check_one(addr_cases[i].addr, addr_cases[i].err);
	/* the null reverse-path */
	CU_ASSERT_EQUAL(q_addr_check("", true, NULL), 0);
	CU_ASSERT_EQUAL(q_addr_check("", false, NULL), -1);
	CU_ASSERT_EQUAL(q_addr_check("x@y", true, NULL), 0);
}

static void test_addr_limits(void)
{
	char buf[600];
	char *l64 = rep('l', 64), *l65 = rep('l', 65), *l62 = rep('q', 62);
	char *d63 = rep('d', 63), *d64 = rep('d', 64);
	char *dom252 = domain_of(252), *dom253 = domain_of(253);
	char *dom255 = domain_of(255), *dom256 = domain_of(256);

	/* local part: 64 is fine, 65 is not */
	snprintf(buf, sizeof(buf), "%s@example.com", l64);
	check_one(buf, NULL);
	snprintf(buf, sizeof(buf), "%s@example.com", l65);
	check_one(buf, "local part longer than 64 octets");
	/* a quoted local part counts its quotes: 62 + 2 = 64 */
	snprintf(buf, sizeof(buf), "\"%s\"@example.com", l62);
	check_one(buf, NULL);
	snprintf(buf, sizeof(buf), "\"%sq\"@example.com", l62);
	check_one(buf, "local part longer than 64 octets");
	/* labels: 63 fine, 64 not */
	snprintf(buf, sizeof(buf), "u@%s.example", d63);
	check_one(buf, NULL);
	snprintf(buf, sizeof(buf), "u@%s.example", d64);
	check_one(buf, "domain label longer than 63 octets");
	snprintf(buf, sizeof(buf), "u@example.%s", d64);
	check_one(buf, "domain label longer than 63 octets");
	/* whole address: 254 fine (1 + 1 + 252), 255 not */
	snprintf(buf, sizeof(buf), "u@%s", dom252);
	CU_ASSERT_EQUAL(strlen(buf), 254);
	check_one(buf, NULL);
	snprintf(buf, sizeof(buf), "u@%s", dom253);
	CU_ASSERT_EQUAL(strlen(buf), 255);
	check_one(buf, "address longer than 254 octets");
	/* domain: 255 is within the domain limit (but the address is too
	 * long), 256 is over it */
	snprintf(buf, sizeof(buf), "u@%s", dom255);
	check_one(buf, "address longer than 254 octets");
	snprintf(buf, sizeof(buf), "u@%s", dom256);
	check_one(buf, "domain longer than 255 octets");
	free(l64); free(l65); free(l62); free(d63); free(d64);
	free(dom252); free(dom253); free(dom255); free(dom256);
}

static const struct {
	const char *addr, *domain;
} dom_cases[] = {
	{ "a@b.example", "b.example" },
	{ "\"x@y\"@z.example", "z.example" },
	{ "\"a\\\"@b\"@c", "c" },
	{ "user@[192.0.2.1]", "[192.0.2.1]" },
	{ "nodomain", "" },
	{ "", "" },
	{ "\"only@quoted\"", "" },
};

static void test_addr_domain(void)
{
	size_t i;

	for (i = 0; i < N(dom_cases); i++)
		CU_ASSERT_STRING_EQUAL(q_addr_domain(dom_cases[i].addr),
				       dom_cases[i].domain);
}

/* ---- canonical form ---- */

static char *long_line(char first, size_t n, const char *prefix, const char *suffix)
{
	size_t lp = strlen(prefix), ls = strlen(suffix);
	char *s = malloc(lp + n + ls + 1);

	memcpy(s, prefix, lp);
	memset(s + lp, 'x', n);
	s[lp] = first;
	memcpy(s + lp + n, suffix, ls + 1);
	return s;
}

static const struct {
	const char *in;
	size_t len;             /* 0: strlen */
	const char *out;        /* NULL: error */
	const char *err;
} canon_cases[] = {
	{ "", 0, "", NULL },
	{ "a", 0, "a\r\n", NULL },
	{ "a\n", 0, "a\r\n", NULL },
	{ "a\r\n", 0, "a\r\n", NULL },
	{ "a\r", 0, "a\r\n", NULL },
	{ "a\rb", 0, "a\r\nb\r\n", NULL },
	{ "a\n\nb", 0, "a\r\n\r\nb\r\n", NULL },
	{ "\n", 0, "\r\n", NULL },
	{ "\r\n\r\n", 0, "\r\n\r\n", NULL },
	{ "\r\r\n", 0, "\r\n\r\n", NULL },
	{ "\n\r", 0, "\r\n\r\n", NULL },
	{ "a\r\nb\nc\rd", 0, "a\r\nb\r\nc\r\nd\r\n", NULL },
	{ ".a\n", 0, "..a\r\n", NULL },
	{ ".\n", 0, "..\r\n", NULL },
	{ "..\n", 0, "...\r\n", NULL },
	{ "a\n.\nb", 0, "a\r\n..\r\nb\r\n", NULL },
	{ "a\r.\r\n.", 0, "a\r\n..\r\n..\r\n", NULL },
	{ " .a", 0, " .a\r\n", NULL },
	{ "a.\n", 0, "a.\r\n", NULL },
	{ "x\0y", 3, NULL, "NUL byte in line 1" },
	{ "a\nb\r\nc\0", 7, NULL, "NUL byte in line 3" },
	{ "\0", 1, NULL, "NUL byte in line 1" },
};

static void test_canonicalize(void)
{
	size_t i;

	for (i = 0; i < N(canon_cases); i++) {
		struct q_buf out = { 0 };
		const char *err = NULL;
		size_t len = canon_cases[i].len ? canon_cases[i].len
						: strlen(canon_cases[i].in);
		int r = q_msg_canonicalize(canon_cases[i].in, len, &out, &err);

		if (canon_cases[i].out != NULL) {
			CU_ASSERT_EQUAL(r, 0);
			CU_ASSERT_EQUAL(out.len, strlen(canon_cases[i].out));
			CU_ASSERT(out.len == 0 || (out.data != NULL &&
				  memcmp(out.data, canon_cases[i].out, out.len) == 0));
			if (out.len != strlen(canon_cases[i].out) ||
			    (out.len > 0 && memcmp(out.data, canon_cases[i].out,
						   out.len) != 0))
				fprintf(stderr, "\n  canonicalize case %zu wrong\n", i);
		} else {
			CU_ASSERT_EQUAL(r, -1);
			CU_ASSERT_PTR_NOT_NULL_FATAL(err);
			CU_ASSERT_STRING_EQUAL(err, canon_cases[i].err);
		}
		q_buf_free(&out);
	}
}

static void test_canonicalize_long(void)
{
	static const struct {
		char first;
		size_t n;
		const char *prefix, *suffix, *err;
		size_t outlen;
	} t[] = {
		{ 'x', 998, "", "\n", NULL, 1000 },
		{ 'x', 998, "", "", NULL, 1000 },
		{ '.', 998, "", "\r\n", NULL, 1001 },   /* stuffed: 999 + CRLF */
		{ 'x', 999, "", "\n", "line 1 longer than 998 octets", 0 },
		{ 'x', 999, "", "", "line 1 longer than 998 octets", 0 },
		{ 'x', 999, "a\nb\r\n", "\n", "line 3 longer than 998 octets", 0 },
		{ 'x', 5000, "\r\r", "", "line 3 longer than 998 octets", 0 },
	};
	size_t i;

	for (i = 0; i < N(t); i++) {
		char *in = long_line(t[i].first, t[i].n, t[i].prefix, t[i].suffix);
		struct q_buf out = { 0 };
		const char *err = NULL;
		int r = q_msg_canonicalize(in, strlen(in), &out, &err);

		if (t[i].err == NULL) {
			CU_ASSERT_EQUAL(r, 0);
			CU_ASSERT_EQUAL(out.len, t[i].outlen);
		} else {
			CU_ASSERT_EQUAL(r, -1);
			CU_ASSERT_PTR_NOT_NULL_FATAL(err);
			CU_ASSERT_STRING_EQUAL(err, t[i].err);
		}
		q_buf_free(&out);
		free(in);
	}
}

static const struct {
	const char *in, *out;
} unstuff_cases[] = {
	{ "", "" },
	{ "a\r\n", "a\r\n" },
	{ "..a\r\n", ".a\r\n" },
	{ "a\r\n...\r\n", "a\r\n..\r\n" },
	{ "..\r\n", ".\r\n" },
	{ "a..b\r\n", "a..b\r\n" },
	{ "..x\r\n..y\r\nz\r\n", ".x\r\n.y\r\nz\r\n" },
	{ "..no line end", ".no line end" },
};

static void test_unstuff(void)
{
	static const char *const rt[] = {
		"hello\n.\n..\n.hidden\nend\n", "\n\n", ".", "a\nb\n",
	};
	size_t i;

	for (i = 0; i < N(unstuff_cases); i++) {
		struct q_buf out = { 0 };

		CU_ASSERT_EQUAL(q_msg_unstuff(unstuff_cases[i].in,
					      strlen(unstuff_cases[i].in), &out), 0);
		CU_ASSERT_PTR_NOT_NULL_FATAL(out.data);
		CU_ASSERT_STRING_EQUAL(out.data, unstuff_cases[i].out);
		q_buf_free(&out);
	}
	/* unstuff(canonicalize(x)) is x with CRLF line ends */
	for (i = 0; i < N(rt); i++) {
		struct q_buf c = { 0 }, u = { 0 }, want = { 0 };
		const char *p;

		CU_ASSERT_EQUAL_FATAL(q_msg_canonicalize(rt[i], strlen(rt[i]), &c,
							 NULL), 0);
		CU_ASSERT_EQUAL(q_msg_unstuff(c.data, c.len, &u), 0);
		for (p = rt[i]; *p != '\0'; p++)
			q_buf_adds(&want, *p == '\n' ? "\r\n" : (char[]){ *p, 0 });
		if (want.len == 0 || want.data[want.len - 1] != '\n')
			q_buf_adds(&want, "\r\n");
		CU_ASSERT_STRING_EQUAL(u.data, want.data);
		q_buf_free(&c);
		q_buf_free(&u);
		q_buf_free(&want);
	}
}

/* ---- recipients from the header ---- */

static const struct {
	const char *msg;        /* LF line ends; canonicalised by the test */
	const char *rcpts;      /* space-separated; NULL: error */
	const char *after;      /* message after Bcc removal; NULL: unchanged */
	const char *err;
} hdr_cases[] = {
	{ "To: a@b.example\n\nbody\n", "a@b.example", NULL, NULL },
	{ "tO: a@x\ncC: b@x\nBCC: c@x\nSubject: s\n\nb\n", "a@x b@x c@x",
	  "tO: a@x\ncC: b@x\nSubject: s\n\nb\n", NULL },
	{ "To: \"Doe, John\" <john@x>, Jane Roe <jane@x>\n\n",
	  "john@x jane@x", NULL, NULL },
	{ "To: john@x (John Doe), (only (nested) comment) jane(c)@x\n\n",
	  "john@x jane@x", NULL, NULL },
	{ "To: team: a@x, b@x;, c@x\n\n", "a@x b@x c@x", NULL, NULL },
	{ "To: undisclosed-recipients:;\n\n", "", NULL, NULL },
	{ "To: a@x,\n  b@x,\n\tc@x\nSubject: s\n\n", "a@x b@x c@x", NULL, NULL },
	{ "From: f@x\nBcc: a@x,\n b@x\nTo: c@x\n\nbody\n", "a@x b@x c@x",
	  "From: f@x\nTo: c@x\n\nbody\n", NULL },
	{ "Bcc: a@x\nbcc : b@x\nTo: c@x\n\n", "a@x b@x c@x",
	  "To: c@x\n\n", NULL },
	{ "To: \"john doe\"@x, <\"a,b\"@x>\n\n", "\"john doe\"@x \"a,b\"@x",
	  NULL, NULL },
	{ "Subject: x\n\nTo: z@x\n", "", NULL, NULL },
	{ "To: a@x, A@X\nCc: a@x, a@X\n\n", "a@x A@X", NULL, NULL },
	{ "To: a@x", "a@x", NULL, NULL },
	{ "\nTo: a@x\n", "", NULL, NULL },
	{ "Bcc:\nTo: a@x\n\n", "a@x", "To: a@x\n\n", NULL },
	{ "To: a@x\nnot a header line\nCc: b@x\n\n", "a@x", NULL, NULL },
	{ "To: < a@x >\n\n", "a@x", NULL, NULL },
	{ "To: \"<fake@evil>\" <real@x>\n\n", "real@x", NULL, NULL },
	{ "To: a @ x . example\n\n", "a@x.example", NULL, NULL },
	{ "To: a@[192.0.2.1], b@[IPv6:::1]\n\n", "a@[192.0.2.1] b@[IPv6:::1]",
	  NULL, NULL },
	{ "Reply-To: r@x\nX-To: y@x\nTo: a@x\n\n", "a@x", NULL, NULL },
	{ "To: a@x,,, ,b@x\n\n", "a@x b@x", NULL, NULL },
	{ "From someone@x Mon Jan  1 00:00:00 2024\nTo: a@x\n\n", "a@x", NULL, NULL },
	{ "From: f@x\nFrom x\nTo: a@x\n\n", "", NULL, NULL },
	/* a first Bcc before a "From " line is emptied, not removed: that
	   line must not become the first (an mbox separator, the body after
	   it read as fields by the next reader; found by fuzz_address) */
	{ "Bcc: a@b.example\nFrom x\nBcc: c@d.example\n\nbody\n", "a@b.example",
	  "Bcc:\nFrom x\nBcc: c@d.example\n\nbody\n", NULL },
	{ "Bcc: a@x\nTo: b@x\nFrom x\n\n", "a@x b@x", "To: b@x\nFrom x\n\n", NULL },
	/* errors */
	{ "To: john\n\n", NULL, NULL, "To: bad address 'john': no @domain" },
	{ "To: ok@x\nCc: a@x, b@-x\n\n", NULL, NULL,
	  "Cc: bad address 'b@-x': domain label starts with a hyphen" },
	{ "Bcc: \x1b[2J@x\n\n", NULL, NULL, "Bcc: bad address '\\x1b[2J@x'" },
	{ "To: <a@x\n\n", NULL, NULL, "'<' without '>'" },
	{ "To: a@x (unclosed\n\n", NULL, NULL, "unterminated comment" },
	{ "To: \"open@x\n\n", NULL, NULL, "unterminated quoted string" },
	{ "To: John Smith john@x\n\n", NULL, NULL, "space at position" },
	{ "To: <>\n\n", NULL, NULL, "empty address" },
};

static void test_header_rcpts(void)
{
	size_t i;

	for (i = 0; i < N(hdr_cases); i++) {
		struct q_buf msg = { 0 }, want = { 0 }, got = { 0 };
		const char *after = hdr_cases[i].after ? hdr_cases[i].after
						       : hdr_cases[i].msg;
		char **v = NULL, *pre;
		size_t n = 0, k;
		const char *err = NULL;
		int r;

		CU_ASSERT_EQUAL_FATAL(q_msg_canonicalize(hdr_cases[i].msg,
			strlen(hdr_cases[i].msg), &msg, NULL), 0);
		/* one recipient from the command line is already there */
		pre = strdup("pre@cmdline");
		v = malloc(sizeof(*v));
		v[0] = pre;
		n = 1;
		r = q_msg_header_rcpts(&msg, &v, &n, &err);
		if (hdr_cases[i].rcpts == NULL) {
			if (r != -1 || err == NULL ||
			    strstr(err, hdr_cases[i].err) == NULL)
				fprintf(stderr, "\n  header case %zu: r=%d err=%s\n",
					i, r, err ? err : "(none)");
			CU_ASSERT_EQUAL(r, -1);
			CU_ASSERT_PTR_NOT_NULL_FATAL(err);
			CU_ASSERT_PTR_NOT_NULL(strstr(err, hdr_cases[i].err));
			CU_ASSERT_EQUAL(n, 1);     /* only what was there */
			CU_ASSERT_STRING_EQUAL(v[0], "pre@cmdline");
		} else {
			CU_ASSERT_EQUAL(r, 0);
			for (k = 1; k < n; k++) {
				if (k > 1)
					q_buf_addc(&got, ' ');
				q_buf_adds(&got, v[k]);
			}
			q_buf_adds(&got, "");
			if (strcmp(got.data, hdr_cases[i].rcpts) != 0)
				fprintf(stderr, "\n  header case %zu: got [%s]\n",
					i, got.data);
			CU_ASSERT_STRING_EQUAL(got.data, hdr_cases[i].rcpts);
			CU_ASSERT_STRING_EQUAL(v[0], "pre@cmdline");
		}
		/* the message: Bcc fields gone on success, untouched on error */
		CU_ASSERT_EQUAL(q_msg_canonicalize(after, strlen(after), &want,
						   NULL), 0);
		CU_ASSERT_EQUAL(msg.len, want.len);
		CU_ASSERT(msg.len == want.len &&
			  (msg.len == 0 || memcmp(msg.data, want.data, msg.len) == 0));
		CU_ASSERT(msg.len == 0 || msg.data[msg.len] == '\0');
		q_strv_free(&v, n);
		CU_ASSERT_PTR_NULL(v);
		q_buf_free(&msg);
		q_buf_free(&want);
		q_buf_free(&got);
	}
}

/* from an empty array: the array is created; on error nothing leaks */
static void test_header_rcpts_empty(void)
{
	struct q_buf msg = { 0 };
	char **v = NULL;
	size_t n = 0;
	const char *err;

	q_buf_adds(&msg, "To: a@x, b@x\r\n\r\n");
	CU_ASSERT_EQUAL(q_msg_header_rcpts(&msg, &v, &n, &err), 0);
	CU_ASSERT_EQUAL_FATAL(n, 2);
	CU_ASSERT_STRING_EQUAL(v[0], "a@x");
	CU_ASSERT_STRING_EQUAL(v[1], "b@x");
	q_strv_free(&v, n);
	n = 0;
	q_buf_reset(&msg);
	q_buf_adds(&msg, "To: a@x, b@x, bad\r\n\r\n");
	CU_ASSERT_EQUAL(q_msg_header_rcpts(&msg, &v, &n, &err), -1);
	CU_ASSERT_EQUAL(n, 0);
	CU_ASSERT_PTR_NULL(v);
	q_buf_free(&msg);
}

void suite_addr(void)
{
	CU_pSuite s = CU_add_suite("addr", NULL, NULL);

	CU_add_test(s, "q_addr_check table", test_addr_table);
	CU_add_test(s, "q_addr_check length limits at and over", test_addr_limits);
	CU_add_test(s, "q_addr_domain", test_addr_domain);
	CU_add_test(s, "q_msg_canonicalize table", test_canonicalize);
	CU_add_test(s, "q_msg_canonicalize long lines", test_canonicalize_long);
	CU_add_test(s, "q_msg_unstuff and round trip", test_unstuff);
	CU_add_test(s, "q_msg_header_rcpts table", test_header_rcpts);
	CU_add_test(s, "q_msg_header_rcpts from empty, failure", test_header_rcpts_empty);
}
