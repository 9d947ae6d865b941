/*
 * tests/fuzz/fuzz_reply.c - the SMTP reply parser (q_reply_parser_*,
 * q_reply_feed in libq/q_smtp_reply.c).
 *
 * Input: the bytes a server sends (one reply or many back to back).
 * They are fed three ways: whole, one byte at a time, and in pieces of
 * 1..64 bytes whose sizes come from a hash of the input (so every
 * mutation moves the split points). Checked on every feed:
 *  - consumed <= the bytes offered; "need more" (done 0) consumes all;
 *  - a reply (done 1): code 200..599 and equal to the digits that start
 *    its bytes, 1..Q_REPLY_MAX_LINES lines (= the LFs it consumed), its
 *    bytes end in LF, text bounded (< Q_REPLY_MAX_TEXT, NUL-terminated,
 *    no longer than the bytes consumed), every line but the last has
 *    '-' after the code and all codes are equal, the enhanced code is
 *    a prefix of the text with the reply's class; when the text was not
 *    truncated it equals the lines without codes, separators and CRLF;
 *  - an error (done -1) sticks: the next feed consumes nothing and fails
 *    again with the same text, until q_reply_parser_reset;
 *  - the three feedings give the same replies at the same offsets and
 *    the same error (same text, after the same number of replies).
 */
#include "config.h"
#include "q/smtp.h"
#include "fuzz.h"

#include <string.h>

enum { EV_REPLY = 1, EV_ERROR = -1 };

struct ev {
	int kind;
	size_t end;               /* EV_REPLY: offset after its last byte */
	int code;
	size_t nlines, textlen;
	char enh[16];
	uint32_t texthash;
	const char *err;          /* EV_ERROR: the text (a static string) */
};

struct run {
	struct ev *ev;
	size_t nev, cap;
};

static struct q_reply_parser *parser;
static struct q_reply reply;

/* The text a reply of bytes d[0..n) must have (when not truncated):
 * lines without code and '-'/' ' separator, without LF or CRLF, joined
 * by '\n'. Also checks the grammar the parser accepted. */
static void check_reply(const uint8_t *d, size_t n, const struct q_reply *r)
{
	static char want[Q_REPLY_MAX_TEXT];
	size_t wlen = 0, lines = 0, pos = 0;   /* wlen: the whole text */

	FZ_CHECK(r->code >= 200 && r->code <= 599, "code %d", r->code);
	FZ_CHECK(n >= 4 && d[n - 1] == '\n', "reply of %zu bytes does not "
		 "end in LF", n);
	FZ_CHECK(r->textlen < Q_REPLY_MAX_TEXT, "textlen %zu", r->textlen);
	FZ_CHECK(r->text[r->textlen] == '\0', "text not NUL-terminated");
	FZ_CHECK(r->textlen <= n, "text %zu bytes from %zu bytes", r->textlen, n);
	FZ_CHECK(r->nlines >= 1 && r->nlines <= Q_REPLY_MAX_LINES,
		 "nlines %zu", r->nlines);
	FZ_CHECK(memchr(r->enh, '\0', sizeof(r->enh)) != NULL,
		 "enh not NUL-terminated");
	if (r->enh[0] != '\0') {
		FZ_CHECK(r->enh[0] == '0' + r->code / 100, "enh %s for code %d",
			 r->enh, r->code);
		FZ_CHECK(strncmp(r->text, r->enh, strlen(r->enh)) == 0,
			 "enh %s is not where the text starts", r->enh);
	}
	while (pos < n) {
		const uint8_t *nl = memchr(d + pos, '\n', n - pos);
		size_t end, len, code;

		FZ_CHECK(nl != NULL, "reply bytes end without LF");
		end = (size_t)(nl - d);
		len = end - pos;
		if (len > 0 && d[end - 1] == '\r')
			len--;
		FZ_CHECK(len >= 3, "line %zu shorter than a code", lines + 1);
		code = (size_t)(d[pos] - '0') * 100 + (size_t)(d[pos + 1] - '0') * 10 +
		       (size_t)(d[pos + 2] - '0');
		FZ_CHECK((int)code == r->code, "line %zu has code %.3s, reply %d",
			 lines + 1, (const char *)d + pos, r->code);
		lines++;
		if (end + 1 < n)
			FZ_CHECK(len > 3 && d[pos + 3] == '-', "line %zu is not the "
				 "last but has no '-'", lines);
		else
			FZ_CHECK(len == 3 || d[pos + 3] != '-',
				 "the last line has '-'");
		if (lines > 1) {
			if (wlen < sizeof(want))
				want[wlen] = '\n';
			wlen++;
		}
		pos += 3;
		len -= 3;
		if (len > 0 && (d[pos] == '-' || d[pos] == ' ')) {
			pos++;
			len--;
		}
		if (wlen + len <= sizeof(want))
			memcpy(want + wlen, d + pos, len);
		wlen += len;
		pos = end + 1;
	}
	FZ_CHECK(lines == r->nlines, "%zu lines consumed, nlines %zu", lines,
		 r->nlines);
	if (wlen < Q_REPLY_MAX_TEXT)   /* not truncated */
		FZ_CHECK(wlen == r->textlen && memcmp(want, r->text, wlen) == 0,
			 "text \"%.*s\" (%zu), expected \"%.*s\" (%zu)",
			 (int)(r->textlen > 200 ? 200 : r->textlen), r->text,
			 r->textlen, (int)(wlen > 200 ? 200 : wlen), want, wlen);
}

static void add_ev(struct run *run, const struct ev *e)
{
	if (run->nev == run->cap) {
		size_t cap = run->cap ? run->cap * 2 : 16;
		struct ev *n = realloc(run->ev, cap * sizeof(*n));

		if (n == NULL)
			fz_harness_fail("out of memory");
		run->ev = n;
		run->cap = cap;
	}
	run->ev[run->nev++] = *e;
}

/* mode 0: whole; 1: byte by byte; 2: pieces from the hash. */
static void feed_all(const uint8_t *d, size_t n, int mode, struct run *run)
{
	uint32_t rnd = fz_hash(d, n) | 1;
	size_t pos = 0, start = 0;

	q_reply_parser_reset(parser);
	run->nev = 0;
	while (pos < n) {
		size_t chunk = n - pos, off = 0;

		if (mode == 1)
			chunk = 1;
		else if (mode == 2 && chunk > 1)
			chunk = 1 + fz_rand(&rnd) % (chunk < 64 ? chunk : 64);
		while (off < chunk) {
			const char *err = NULL;
			int done = 7;
			size_t used = q_reply_feed(parser, (const char *)d + pos + off,
						   chunk - off, &reply, &done, &err);
			struct ev e;

			FZ_CHECK(used <= chunk - off, "consumed %zu of %zu", used,
				 chunk - off);
			FZ_CHECK(done >= -1 && done <= 1, "done %d", done);
			off += used;
			if (done == 0) {
				FZ_CHECK(off == chunk, "done 0 but %zu of %zu bytes "
					 "left", chunk - off, chunk);
				continue;
			}
			memset(&e, 0, sizeof(e));
			e.kind = done;
			if (done == -1) {
				const char *err2 = NULL;
				int done2 = 7;

				FZ_CHECK(err != NULL && err[0] != '\0', "no error text");
				e.err = err;
				add_ev(run, &e);
				/* the error sticks */
				FZ_CHECK(q_reply_feed(parser, "250 ok\r\n", 8, &reply,
						      &done2, &err2) == 0 &&
					 done2 == -1 && err2 != NULL &&
					 strcmp(err2, err) == 0,
					 "error state lost (done %d)", done2);
				return;
			}
			e.end = pos + off;
			check_reply(d + start, e.end - start, &reply);
			e.code = reply.code;
			e.nlines = reply.nlines;
			e.textlen = reply.textlen;
			memcpy(e.enh, reply.enh, sizeof(e.enh));
			e.texthash = fz_hash((const uint8_t *)reply.text,
					     reply.textlen);
			add_ev(run, &e);
			start = e.end;
		}
		pos += chunk;
	}
}

static void same_runs(const struct run *a, const struct run *b,
		      const char *how)
{
	FZ_CHECK(a->nev == b->nev, "%s: %zu events, whole: %zu", how, b->nev,
		 a->nev);
	for (size_t i = 0; i < a->nev; i++) {
		const struct ev *x = &a->ev[i], *y = &b->ev[i];

		FZ_CHECK(x->kind == y->kind, "%s: event %zu is %d, whole: %d", how,
			 i, y->kind, x->kind);
		if (x->kind == EV_ERROR) {
			FZ_CHECK(strcmp(x->err, y->err) == 0, "%s: error \"%s\", "
				 "whole: \"%s\"", how, y->err, x->err);
			continue;
		}
		FZ_CHECK(x->end == y->end && x->code == y->code &&
			 x->nlines == y->nlines && x->textlen == y->textlen &&
			 x->texthash == y->texthash &&
			 strcmp(x->enh, y->enh) == 0,
			 "%s: reply %zu differs (end %zu/%zu code %d/%d lines "
			 "%zu/%zu text %zu/%zu enh '%s'/'%s')", how, i, y->end,
			 x->end, y->code, x->code, y->nlines, x->nlines,
			 y->textlen, x->textlen, y->enh, x->enh);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run whole, bytes, pieces;
	/* a copy of its own, so that a read past the end is seen */
	uint8_t *d = malloc(size ? size : 1);

	if (d == NULL)
		fz_harness_fail("out of memory");
	memcpy(d, data, size);
	if (parser == NULL && (parser = q_reply_parser_new()) == NULL)
		fz_harness_fail("q_reply_parser_new failed");
	feed_all(d, size, 0, &whole);
	feed_all(d, size, 1, &bytes);
	feed_all(d, size, 2, &pieces);
	same_runs(&whole, &bytes, "byte by byte");
	same_runs(&whole, &pieces, "in pieces");
	free(d);
	return 0;
}
