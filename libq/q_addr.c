/*
 * q_addr.c - mail addresses (RFC 5321 Mailbox syntax and limits) and the
 * message text: canonical CRLF form with dot-stuffing, unstuffing, and
 * the recipients of To:/Cc:/Bcc: header fields for `submit -t`.
 *
 * Invariants:
 *  - q_addr_check accepts exactly RFC 5321's Mailbox: Dot-string or
 *    Quoted-string local part (ASCII only: SMTPUTF8 is refused), a domain
 *    of LDH labels or an address literal ([IPv4] or [IPv6:...], checked
 *    with inet_pton); general address literals (Tag:...) are refused.
 *    Limits (RFC 5321 4.5.3.1): local part 64, domain 255, address 254
 *    octets (the last one is the RFC 5321 path limit minus the brackets).
 *  - q_msg_canonicalize output: every line ends in CRLF, lines starting
 *    with '.' are stuffed, no NUL, no line longer than 998 octets before
 *    stuffing (the limit is checked on the user's text).
 *
 * Diagnostics: every error names what is wrong and where (1-based
 * character positions for addresses, 1-based line numbers for messages).
 *
 * Weak spots: header parsing understands RFC 5322 address lists (display
 * names, comments, groups, quoted strings, folding) but not obsolete
 * routes (<@a,@b:u@d>) or encoded words in addresses; duplicate removal
 * among the collected recipients is O(N^2) in their number.
 */
#include "config.h"
#include "q/addr.h"
#include "q_private.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LOCAL_MAX   64
#define DOMAIN_MAX  255
#define ADDR_MAX    254
#define LABEL_MAX   63
#define LINE_MAX_OCTETS 998

/* ------------------------------------------------------------------ */
/* addresses */

static bool is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-';
}

/* "bad character ',' at position 5" (pos is 0-based here) */
static int bad_char(const char **error_r, const char *addr, size_t pos)
{
	unsigned char c = (unsigned char)addr[pos];

	if (c >= 0x80)
		return q_err(error_r, "non-ASCII byte 0x%02x at position %zu "
			     "(internationalised addresses are not supported)",
			     c, pos + 1);
	if (c < 0x20 || c == 0x7f)
		return q_err(error_r, "bad character \\x%02x at position %zu",
			     c, pos + 1);
	if (c == ' ')
		return q_err(error_r, "space at position %zu", pos + 1);
	return q_err(error_r, "bad character '%c' at position %zu", c, pos + 1);
}

/* Parse the local part at addr; on success *end is the index of the '@'
 * (or of the end of the string: the caller reports "no @domain"). */
static int check_local(const char *addr, size_t *end, const char **error_r)
{
	size_t i = 0;

	if (addr[0] == '"') {
		for (i = 1; addr[i] != '"'; i++) {
			unsigned char c = (unsigned char)addr[i];

			if (c == '\0')
				return q_err(error_r, "unterminated quoted string "
					     "in the local part");
			if (c == '\\') {
				unsigned char n = (unsigned char)addr[i + 1];

				if (n < 32 || n > 126)
					return n == '\0'
					       ? q_err(error_r, "unterminated quoted "
						       "string in the local part")
					       : bad_char(error_r, addr, i + 1);
				i++;
				continue;
			}
			if (c < 32 || c > 126)
				return bad_char(error_r, addr, i);
		}
		i++;
		if (addr[i] == '\0')
			return q_err(error_r, "no @domain");
		if (addr[i] != '@')
			return q_err(error_r, "'@' expected after the quoted local "
				     "part at position %zu", i + 1);
		*end = i;         /* "" is a valid (if odd) local part */
		return 0;
	}
	if (strchr(addr, '@') == NULL)
		return q_err(error_r, "no @domain");
	for (i = 0; addr[i] != '@'; i++) {
		unsigned char c = (unsigned char)addr[i];

		if (c == '.') {
			if (i == 0)
				return q_err(error_r, "local part starts with a dot");
			if (addr[i + 1] == '.')
				return q_err(error_r, "two dots in a row in the "
					     "local part at position %zu", i + 1);
			if (addr[i + 1] == '@')
				return q_err(error_r, "local part ends with a dot");
			continue;
		}
		if (!is_atext(c))
			return bad_char(error_r, addr, i);
	}
	if (i == 0)
		return q_err(error_r, "empty local part");
	*end = i;
	return 0;
}

static int check_literal(const char *addr, size_t start, const char **error_r)
{
	const char *lit = addr + start + 1;       /* after '[' */
	const char *close = strchr(lit, ']');
	unsigned char bin[16];
	char tmp[64];
	size_t n;

	if (close == NULL)
		return q_err(error_r, "address literal without ']'");
	if (close[1] != '\0')
		return bad_char(error_r, addr, (size_t)(close + 1 - addr));
	n = (size_t)(close - lit);
	if (n == 0)
		return q_err(error_r, "empty address literal");
	if (n >= sizeof(tmp))
		return q_err(error_r, "address literal too long");
	memcpy(tmp, lit, n);
	tmp[n] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, tmp + 5, bin) != 1)
			return q_err(error_r, "bad IPv6 address literal [%s]", tmp);
		return 0;
	}
	if (strchr(tmp, ':') != NULL)
		return q_err(error_r, "unsupported address literal [%s] "
			     "(only [IPv4] and [IPv6:...])", tmp);
	if (inet_pton(AF_INET, tmp, bin) != 1)
		return q_err(error_r, "bad IPv4 address literal [%s]", tmp);
	return 0;
}

static int check_domain(const char *addr, size_t start, const char **error_r)
{
	const char *d = addr + start;
	size_t i, label = 0;

	if (*d == '\0')
		return q_err(error_r, "empty domain");
	if (*d == '[') {
		size_t dl = strlen(d);

		if (dl > DOMAIN_MAX)
			return q_err(error_r, "domain longer than %d octets",
				     DOMAIN_MAX);
		return check_literal(addr, start, error_r);
	}
	for (i = 0;; i++) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.' || c == '\0') {
			if (label == 0) {
				if (c == '\0' && i > 0)
					return q_err(error_r, "domain ends with a dot");
				if (i == 0)
					return q_err(error_r, "domain starts with a dot");
				return q_err(error_r, "empty domain label at "
					     "position %zu", start + i + 1);
			}
			if (d[i - 1] == '-')
				return q_err(error_r, "domain label ends with a hyphen");
			if (label > LABEL_MAX)
				return q_err(error_r, "domain label longer than %d "
					     "octets", LABEL_MAX);
			if (c == '\0')
				break;
			label = 0;
			continue;
		}
		if (!is_ldh(c))
			return bad_char(error_r, addr, start + i);
		if (label == 0 && c == '-')
			return q_err(error_r, "domain label starts with a hyphen");
		label++;
	}
	if (i > DOMAIN_MAX)
		return q_err(error_r, "domain longer than %d octets", DOMAIN_MAX);
	return 0;
}

int q_addr_check(const char *addr, bool allow_empty, const char **error_r)
{
	size_t at = 0, len;

	assert(addr != NULL);
	if (*addr == '\0') {
		if (allow_empty)
			return 0;
		return q_err(error_r, "empty address");
	}
	if (check_local(addr, &at, error_r) < 0)
		return -1;
	if (at > LOCAL_MAX)
		return q_err(error_r, "local part longer than %d octets", LOCAL_MAX);
	if (check_domain(addr, at + 1, error_r) < 0)
		return -1;
	len = strlen(addr);
	if (len > ADDR_MAX)
		return q_err(error_r, "address longer than %d octets", ADDR_MAX);
	return 0;
}

const char *q_addr_domain(const char *addr)
{
	const char *last = NULL, *p;
	bool quoted = false;

	for (p = addr; *p != '\0'; p++) {
		if (quoted) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			else if (*p == '"')
				quoted = false;
		} else if (*p == '"') {
			quoted = true;
		} else if (*p == '@') {
			last = p;
		}
	}
	return last != NULL ? last + 1 : "";
}

void q_strv_free(char ***v, size_t n)
{
	size_t i;

	if (*v == NULL)
		return;
	for (i = 0; i < n; i++)
		free((*v)[i]);
	free(*v);
	*v = NULL;
}

/* ------------------------------------------------------------------ */
/* message text */

int q_msg_canonicalize(const char *in, size_t len, struct q_buf *out,
		       const char **error_r)
{
	size_t i = 0, line = 1;

	if (len == 0)
		return q_buf_reserve(out, 0) < 0
		       ? q_err(error_r, "out of memory") : 0;
	if (q_buf_reserve(out, len + len / 32 + 64) < 0)
		return q_err(error_r, "out of memory");
	while (i < len) {
		size_t start = i, n;
		const char *nul;

		while (i < len && in[i] != '\r' && in[i] != '\n')
			i++;
		n = i - start;
		nul = memchr(in + start, '\0', n);
		if (nul != NULL)
			return q_err(error_r, "NUL byte in line %zu", line);
		if (n > LINE_MAX_OCTETS)
			return q_err(error_r, "line %zu longer than %d octets",
				     line, LINE_MAX_OCTETS);
		if (n > 0 && in[start] == '.' && q_buf_addc(out, '.') < 0)
			return q_err(error_r, "out of memory");
		if (q_buf_add(out, in + start, n) < 0 ||
		    q_buf_add(out, "\r\n", 2) < 0)
			return q_err(error_r, "out of memory");
		if (i < len) {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			i++;
		}
		line++;
	}
	return 0;
}

int q_msg_unstuff(const char *in, size_t len, struct q_buf *out)
{
	size_t i = 0;

	while (i < len) {
		const char *nl = memchr(in + i, '\n', len - i);
		size_t end = nl != NULL ? (size_t)(nl - in) + 1 : len;

		if (in[i] == '.')
			i++;
		if (q_buf_add(out, in + i, end - i) < 0)
			return -1;
		i = end;
	}
	return q_buf_reserve(out, 0);
}

/* ---- header recipients ---- */

enum hdr_kind { HDR_OTHER, HDR_TO, HDR_CC, HDR_BCC };

struct hfield {
	size_t start, end;       /* byte range in msg, CRLFs included */
	enum hdr_kind kind;
	size_t name_len;         /* length of the name before ':' */
	size_t value;            /* index just after ':' */
};

/* Length of the line at p (up to and including "\n"), within n. */
static size_t line_len(const char *p, size_t n)
{
	const char *nl = memchr(p, '\n', n);

	return nl != NULL ? (size_t)(nl - p) + 1 : n;
}

/* Is the line at p..p+n a header field start "name:"? Sets *colon. */
static bool field_start(const char *p, size_t n, size_t *colon)
{
	size_t i = 0;

	while (i < n && (unsigned char)p[i] > 32 && (unsigned char)p[i] < 127 &&
	       p[i] != ':')
		i++;
	if (i == 0)
		return false;
	*colon = i;
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;        /* obsolete: WSP before the colon */
	if (i < n && p[i] == ':') {
		*colon = i;
		return true;
	}
	return false;
}

/* Append one item (comments already removed, outer spaces trimmed) after
 * removing spaces that RFC 5322 allows around '.', '@' and inside angle
 * brackets; other spaces are kept and q_addr_check refuses them. */
static int squeeze_addr(const char *s, size_t n, struct q_buf *out)
{
	size_t i;
	bool quoted = false;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (quoted) {
			if (c == '\\' && i + 1 < n) {
				if (q_buf_addc(out, c) < 0)
					return -1;
				c = s[++i];
			} else if (c == '"') {
				quoted = false;
			}
		} else if (c == '"') {
			quoted = true;
		} else if (c == ' ' || c == '\t') {
			size_t j = i, k;

			while (j < n && (s[j] == ' ' || s[j] == '\t'))
				j++;
			k = out->len;
			if (j == n || s[j] == '.' || s[j] == '@' ||
			    (k > 0 && (out->data[k - 1] == '.' ||
				       out->data[k - 1] == '@'))) {
				i = j - 1;
				continue;
			}
		}
		if (q_buf_addc(out, c) < 0)
			return -1;
	}
	return 0;
}

struct rcpt_list {
	char ***v;
	size_t *n;
	size_t n0;              /* entries present before this call */
};

static bool rcpt_seen(struct rcpt_list *rl, const char *a)
{
	const char *da = q_addr_domain(a);
	size_t la = (size_t)(da - a), i;

	for (i = 0; i < *rl->n; i++) {
		const char *b = (*rl->v)[i];
		const char *db = q_addr_domain(b);

		if ((size_t)(db - b) == la && memcmp(a, b, la) == 0 &&
		    strcasecmp(da, db) == 0)
			return true;
	}
	return false;
}

static int rcpt_add(struct rcpt_list *rl, const char *a)
{
	char **nv, *dup;

	if (rcpt_seen(rl, a))
		return 0;
	dup = strdup(a);
	if (dup == NULL)
		return -1;
	nv = realloc(*rl->v, (*rl->n + 1) * sizeof(*nv));
	if (nv == NULL) {
		free(dup);
		return -1;
	}
	nv[(*rl->n)++] = dup;
	*rl->v = nv;
	return 0;
}

/* Finish one list item: the text in item (comments removed). */
static int item_done(struct q_buf *item, const char *fname,
		     struct rcpt_list *rl, const char **error_r)
{
	struct q_buf a = { 0 }, shown = { 0 };
	const char *s = item->data, *err = NULL;
	size_t n = item->len, lt, gt;
	int ret = 0;

	if (n == 0)
		return 0;
	/* an angle-addr anywhere in the item wins over the display name */
	{
		bool quoted = false;
		size_t i;

		lt = gt = n;
		for (i = 0; i < n; i++) {
			if (quoted) {
				if (s[i] == '\\')
					i++;
				else if (s[i] == '"')
					quoted = false;
			} else if (s[i] == '"') {
				quoted = true;
			} else if (s[i] == '<' && lt == n) {
				lt = i;
			} else if (s[i] == '>' && lt != n) {
				gt = i;
				break;
			}
		}
		if (lt != n && gt == n) {
			q_escape_term(&shown, s, n, true);
			ret = q_err(error_r, "%s: '%s': '<' without '>'", fname,
				    shown.data != NULL ? shown.data : "");
			goto out;
		}
	}
	if (lt != n) {
		s += lt + 1;
		n = gt - lt - 1;
	}
	while (n > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (n == 0 && lt == item->len)
		goto out;                  /* only spaces or comments */
	if (squeeze_addr(s, n, &a) < 0 || q_buf_reserve(&a, 0) < 0) {
		ret = q_err(error_r, "out of memory");
		goto out;
	}
	if (q_addr_check(a.data, false, &err) < 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", err);
		q_escape_term(&shown, a.data, a.len, true);
		ret = q_err(error_r, "%s: bad address '%s': %s", fname,
			    shown.data != NULL ? shown.data : "", why);
		goto out;
	}
	if (rcpt_add(rl, a.data) < 0)
		ret = q_err(error_r, "out of memory");
out:
	q_buf_free(&a);
	q_buf_free(&shown);
	q_buf_reset(item);
	return ret;
}

/* Parse the unfolded value of an address field. */
static int parse_list(const char *v, size_t n, const char *fname,
		      struct rcpt_list *rl, const char **error_r)
{
	struct q_buf item = { 0 };
	size_t i;
	int angle = 0, ret = 0;

	for (i = 0; i < n && ret == 0; i++) {
		char c = v[i];

		if (c == '(') {
			/* comment, nested, with quoted-pairs; acts as a space */
			int depth = 1;

			for (i++; i < n && depth > 0; i++) {
				if (v[i] == '\\')
					i++;
				else if (v[i] == '(')
					depth++;
				else if (v[i] == ')')
					depth--;
			}
			if (depth > 0) {
				ret = q_err(error_r, "%s: unterminated comment", fname);
				break;
			}
			i--;
			if (q_buf_addc(&item, ' ') < 0)
				ret = q_err(error_r, "out of memory");
			continue;
		}
		if (c == '"') {
			size_t j = i + 1;

			while (j < n && v[j] != '"') {
				if (v[j] == '\\')
					j++;
				j++;
			}
			if (j >= n) {
				ret = q_err(error_r, "%s: unterminated quoted string",
					    fname);
				break;
			}
			if (q_buf_add(&item, v + i, j - i + 1) < 0)
				ret = q_err(error_r, "out of memory");
			i = j;
			continue;
		}
		if (c == '[' && memchr(v + i, ']', n - i) != NULL) {
			/* a domain literal: copied as it is (no comments or
			 * specials inside) */
			size_t j = (size_t)((const char *)memchr(v + i, ']', n - i) - v);

			if (q_buf_add(&item, v + i, j - i + 1) < 0)
				ret = q_err(error_r, "out of memory");
			i = j;
			continue;
		}
		if (c == '<')
			angle++;
		else if (c == '>' && angle > 0)
			angle--;
		if (angle == 0 && c == ',') {
			ret = item_done(&item, fname, rl, error_r);
			continue;
		}
		if (angle == 0 && c == ':') {
			/* group: what came before is its display name */
			q_buf_reset(&item);
			continue;
		}
		if (angle == 0 && c == ';') {
			ret = item_done(&item, fname, rl, error_r);
			continue;
		}
		if (c == '\r' || c == '\n')
			c = ' ';
		if (q_buf_addc(&item, c) < 0)
			ret = q_err(error_r, "out of memory");
	}
	if (ret == 0)
		ret = item_done(&item, fname, rl, error_r);
	q_buf_free(&item);
	return ret;
}

int q_msg_header_rcpts(struct q_buf *msg, char ***rcpts_r, size_t *n_r,
		       const char **error_r)
{
	struct rcpt_list rl = { rcpts_r, n_r, *n_r };
	struct hfield *f = NULL;
	size_t nf = 0, pos = 0, k;
	const char *d = msg->data;
	size_t len = msg->len;
	int ret = 0;

	/* an mbox "From " line before the header is not a field: skip it */
	if (len >= 5 && memcmp(d, "From ", 5) == 0)
		pos = line_len(d, len);
	/* pass 1: find the fields of the header section */
	while (pos < len) {
		size_t ll = line_len(d + pos, len - pos), colon;
		struct hfield h;
		struct hfield *nfp;

		if (ll <= 2 && (d[pos] == '\r' || d[pos] == '\n'))
			break;                          /* empty line: the body */
		if (!field_start(d + pos, ll, &colon))
			break;                          /* not a field: body */
		h.start = pos;
		h.name_len = colon;
		while (h.name_len > 0 && (d[pos + h.name_len - 1] == ' ' ||
					  d[pos + h.name_len - 1] == '\t'))
			h.name_len--;
		h.value = pos + colon + 1;
		pos += ll;
		while (pos < len && (d[pos] == ' ' || d[pos] == '\t'))
			pos += line_len(d + pos, len - pos);
		h.end = pos;
		h.kind = HDR_OTHER;
		if (h.name_len == 2 && strncasecmp(d + h.start, "to", 2) == 0)
			h.kind = HDR_TO;
		else if (h.name_len == 2 && strncasecmp(d + h.start, "cc", 2) == 0)
			h.kind = HDR_CC;
		else if (h.name_len == 3 && strncasecmp(d + h.start, "bcc", 3) == 0)
			h.kind = HDR_BCC;
		if (h.kind == HDR_OTHER)
			continue;
		nfp = realloc(f, (nf + 1) * sizeof(*f));
		if (nfp == NULL) {
			free(f);
			return q_err(error_r, "out of memory");
		}
		f = nfp;
		f[nf++] = h;
	}

	/* pass 2: the addresses */
	for (k = 0; k < nf && ret == 0; k++) {
		static const char *const names[] = { "", "To", "Cc", "Bcc" };

		ret = parse_list(d + f[k].value, f[k].end - f[k].value,
				 names[f[k].kind], &rl, error_r);
	}
	if (ret < 0) {
		const char *keep = q_err_last();
		size_t i;

		for (i = rl.n0; i < *n_r; i++)
			free((*rcpts_r)[i]);
		*n_r = rl.n0;
		if (rl.n0 == 0) {
			free(*rcpts_r);
			*rcpts_r = NULL;
		}
		free(f);
		if (error_r != NULL)
			*error_r = keep;
		return -1;
	}

	/* pass 3: remove Bcc fields, from the last one down. A Bcc field
	 * that is the first line, followed by a line starting "From " (a
	 * header that ends at a non-field line), is emptied to "Bcc:" instead
	 * (RFC 5322 3.6.3 allows a Bcc field with no addresses): removed, it
	 * would leave that line first, where it reads as an mbox separator
	 * and the body after it as header fields. */
	for (k = nf; k-- > 0;) {
		size_t keep = 0;

		if (f[k].kind != HDR_BCC)
			continue;
		if (f[k].start == 0 && msg->len - f[k].end >= 5 &&
		    memcmp(msg->data + f[k].end, "From ", 5) == 0) {
			/* "Bcc:" and the field's own line end */
			const char *eol = f[k].end >= 2 &&
				msg->data[f[k].end - 2] == '\r' ? "\r\n" : "\n";

			memcpy(msg->data + f[k].start, "Bcc:", 4);
			memcpy(msg->data + f[k].start + 4, eol, strlen(eol));
			keep = 4 + strlen(eol);
		}
		memmove(msg->data + f[k].start + keep, msg->data + f[k].end,
			msg->len - f[k].end);
		msg->len -= f[k].end - f[k].start - keep;
		msg->data[msg->len] = '\0';
	}
	free(f);
	return 0;
}
