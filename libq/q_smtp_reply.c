/*
 * q_smtp_reply.c - the SMTP reply parser (q_reply_*), part of the SMTP
 * client module but usable on its own (no OpenSSL here).
 *
 * Owns: struct q_reply_parser, an incremental state machine fed with
 * whatever bytes the network delivered. A reply may be split at any byte;
 * the parser keeps the partial reply and finishes it on a later call.
 *
 * Grammar accepted (RFC 5321 4.2, with the usual tolerance):
 *   line  = code ( "-" text | " " text | "" ) [CR] LF
 *   code  = [2-5] DIGIT DIGIT
 * every line but the last uses "-", the last " " or nothing; every line
 * of one reply carries the same code. A bare LF ends a line like CRLF;
 * a CR elsewhere is kept as text.
 *
 * Invariants:
 *  - memory is fixed (one struct); input is never buffered beyond the
 *    kept text, so a hostile server costs at most Q_REPLY_MAX_LINES lines
 *    of Q_REPLY_MAX_LINE bytes of CPU before the error, never memory;
 *  - on success exactly the bytes of one reply are consumed (through the
 *    LF of its last line); the parser is then ready for the next reply;
 *  - after an error the parser stays in error (every feed returns -1
 *    and consumes nothing) until q_reply_parser_reset.
 *
 * Line length counts the code, the separator and the text, not the line
 * end. Text beyond Q_REPLY_MAX_TEXT - 1 bytes is dropped silently (the
 * reply stays valid). The enhanced status code (RFC 3463) is taken from
 * the first line only, when its class matches the reply's first digit.
 *
 * Cost: one pass over the input; text lines are copied with memchr and
 * memcpy, so a typical reply costs well under a microsecond.
 */
#include "config.h"
#include "q_private.h"
#include "q/smtp.h"

#include <stdlib.h>
#include <string.h>

enum rstate { R_CODE, R_SEP, R_TEXT, R_ERROR };

struct q_reply_parser {
	enum rstate st;
	int ndigits;          /* digits of this line's code read so far */
	int linecode;         /* this line's code */
	bool last;            /* this line ends the reply */
	bool last_cr;         /* last byte of this line so far was CR */
	size_t linelen;       /* bytes of this line so far (without LF) */
	size_t line_text;     /* text bytes of this line seen so far */
	size_t line_start;    /* offset of this line's text in r.text */
	const char *error;
	struct q_reply r;     /* the reply being built */
};

struct q_reply_parser *q_reply_parser_new(void)
{
	struct q_reply_parser *p = malloc(sizeof(*p));

	if (p != NULL)
		q_reply_parser_reset(p);
	return p;
}

void q_reply_parser_free(struct q_reply_parser **pp)
{
	if (pp == NULL || *pp == NULL)
		return;
	free(*pp);
	*pp = NULL;
}

static void line_reset(struct q_reply_parser *p)
{
	p->st = R_CODE;
	p->ndigits = 0;
	p->linecode = 0;
	p->last = false;
	p->last_cr = false;
	p->linelen = 0;
	p->line_text = 0;
	p->line_start = 0;
}

void q_reply_parser_reset(struct q_reply_parser *p)
{
	line_reset(p);
	p->error = NULL;
	p->r.code = 0;
	p->r.enh[0] = '\0';
	p->r.nlines = 0;
	p->r.textlen = 0;
	p->r.text[0] = '\0';
}

/* RFC 3463: class "." subject "." detail, class in 2/4/5, subject and
 * detail 1-3 digits (q_private.h). */
size_t q_enh_len(const char *s, size_t n, char cls, const char *ends)
{
	size_t i = 2;

	if ((cls != '2' && cls != '4' && cls != '5') || n < 5 ||
	    s[0] != cls || s[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t start = i;

		while (i < n && i - start < 4 && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < n && s[i] != '\0' && strchr(ends, s[i]) == NULL)
		return 0;
	return i;
}

/* The enhanced code of a reply: at the start of its first line, of the
 * reply's class, then a space or the end of the line. */
static void find_enh(struct q_reply *r)
{
	size_t i = q_enh_len(r->text, r->textlen, (char)('0' + r->code / 100),
			     " \n");

	if (i == 0 || i >= sizeof(r->enh))
		return;
	memcpy(r->enh, r->text, i);
	r->enh[i] = '\0';
}

static size_t fail(struct q_reply_parser *p, const char *why, size_t used,
		   int *done_r, const char **error_r)
{
	p->st = R_ERROR;
	p->error = why;
	*done_r = -1;
	if (error_r != NULL)
		*error_r = why;
	return used;
}

size_t q_reply_feed(struct q_reply_parser *p, const char *buf, size_t len,
		    struct q_reply *out, int *done_r, const char **error_r)
{
	size_t i = 0;

	*done_r = 0;
	if (p->st == R_ERROR) {
		*done_r = -1;
		if (error_r != NULL)
			*error_r = p->error;
		return 0;
	}
	while (i < len) {
		unsigned char ch = (unsigned char)buf[i];

		switch (p->st) {
		case R_CODE:
			if (ch < '0' || ch > '9') {
				if (p->ndigits == 0 && (ch == '\r' || ch == '\n'))
					return fail(p, "empty line where a reply "
						    "was expected", i, done_r,
						    error_r);
				return fail(p, "reply code is not three digits",
					    i, done_r, error_r);
			}
			if (p->ndigits == 0 && (ch < '2' || ch > '5'))
				return fail(p, "reply code outside 2xx-5xx", i,
					    done_r, error_r);
			p->linecode = p->linecode * 10 + (ch - '0');
			p->linelen++;
			i++;
			if (++p->ndigits == 3)
				p->st = R_SEP;
			break;
		case R_SEP:
			if (ch == '-') {
				p->last = false;
			} else if (ch == ' ' || ch == '\r' || ch == '\n') {
				p->last = true;
			} else {
				return fail(p, ch >= '0' && ch <= '9' ?
					    "reply code is not three digits" :
					    "reply code followed by something "
					    "other than '-', ' ' or a line end",
					    i, done_r, error_r);
			}
			if (p->r.nlines == 0) {
				p->r.code = p->linecode;
			} else if (p->linecode != p->r.code) {
				return fail(p, "mixed reply codes in a "
					    "multi-line reply", i, done_r,
					    error_r);
			}
			if (p->r.nlines >= Q_REPLY_MAX_LINES)
				return fail(p, "too many lines in a reply", i,
					    done_r, error_r);
			p->r.nlines++;
			if (p->r.nlines > 1 &&
			    p->r.textlen < Q_REPLY_MAX_TEXT - 1)
				p->r.text[p->r.textlen++] = '\n';
			p->line_start = p->r.textlen;
			if (ch == '-' || ch == ' ') {
				p->linelen++;
				i++;
			}
			p->st = R_TEXT;
			break;
		case R_TEXT: {
			const char *nl = memchr(buf + i, '\n', len - i);
			size_t n = nl != NULL ? (size_t)(nl - (buf + i)) : len - i;
			size_t room = Q_REPLY_MAX_TEXT - 1 - p->r.textlen;
			size_t content;

			/* +1: a CR may still turn out to be the line end */
			if (n > Q_REPLY_MAX_LINE + 1 - p->linelen)
				return fail(p, "reply line too long", i, done_r,
					    error_r);
			if (room > n)
				room = n;
			memcpy(p->r.text + p->r.textlen, buf + i, room);
			p->r.textlen += room;
			if (n > 0)
				p->last_cr = buf[i + n - 1] == '\r';
			p->linelen += n;
			p->line_text += n;
			i += n;
			if (nl == NULL)
				break;
			i++;            /* the LF */
			content = p->linelen - (p->last_cr ? 1 : 0);
			if (content > Q_REPLY_MAX_LINE)
				return fail(p, "reply line too long", i - 1,
					    done_r, error_r);
			/* strip the CR of CRLF when it was stored, i.e. when
			 * every text byte of this line was kept */
			if (p->last_cr &&
			    p->r.textlen - p->line_start == p->line_text)
				p->r.textlen--;
			p->r.text[p->r.textlen] = '\0';
			if (p->r.nlines == 1)
				find_enh(&p->r);
			if (p->last) {
				out->code = p->r.code;
				memcpy(out->enh, p->r.enh, sizeof(out->enh));
				out->nlines = p->r.nlines;
				out->textlen = p->r.textlen;
				memcpy(out->text, p->r.text, p->r.textlen + 1);
				q_reply_parser_reset(p);
				*done_r = 1;
				return i;
			}
			line_reset(p);
			break;
		}
		case R_ERROR:
			return fail(p, p->error, i, done_r, error_r);
		}
	}
	return i;
}
