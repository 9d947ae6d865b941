/*
 * q_util.c - generic helpers: the growable buffer (struct q_buf), Exim
 * time values, terminal and JSON escaping, the boot id, pid liveness.
 *
 * Knows nothing about mail (never includes a mail module's header).
 *
 * Invariants:
 *  - a q_buf with data != NULL has cap > len and data[len] == '\0';
 *    a failed operation leaves the buffer exactly as it was.
 *  - the escapers never emit a byte outside printable ASCII, except
 *    well-formed UTF-8 sequences (q_escape_term with utf8, q_json_str).
 *
 * Diagnostics: only ENOMEM (-1, buffer unchanged) and the boot id read.
 * Complexity: everything is linear in its input; q_buf grows by doubling.
 */
#include "config.h"
#include "q/util.h"
#include "q_private.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* buffer */

int q_buf_reserve(struct q_buf *b, size_t extra)
{
	size_t need, ncap;
	char *p;

	if (extra > SIZE_MAX - 1 - b->len) {
		errno = ENOMEM;
		return -1;
	}
	need = b->len + extra + 1;
	if (b->data != NULL && need <= b->cap)
		return 0;
	ncap = b->cap < 64 ? 64 : b->cap;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2) {
			ncap = need;
			break;
		}
		ncap *= 2;
	}
	p = realloc(b->data, ncap);
	if (p == NULL)
		return -1;
	if (b->data == NULL)
		p[0] = '\0';
	b->data = p;
	b->cap = ncap;
	return 0;
}

int q_buf_add(struct q_buf *b, const void *p, size_t n)
{
	if (q_buf_reserve(b, n) < 0)
		return -1;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int q_buf_adds(struct q_buf *b, const char *s)
{
	return q_buf_add(b, s, strlen(s));
}

int q_buf_addc(struct q_buf *b, char c)
{
	return q_buf_add(b, &c, 1);
}

int q_buf_printf(struct q_buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t avail;
	int n;

	if (q_buf_reserve(b, 0) < 0)
		return -1;
	avail = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, avail, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->data[b->len] = '\0';
		return -1;
	}
	if ((size_t)n >= avail) {
		b->data[b->len] = '\0';
		if (q_buf_reserve(b, (size_t)n) < 0)
			return -1;
		va_start(ap, fmt);
		n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->data[b->len] = '\0';
			return -1;
		}
	}
	b->len += (size_t)n;
	return 0;
}

void q_buf_reset(struct q_buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

void q_buf_free(struct q_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

/* ------------------------------------------------------------------ */
/* time values */

int q_time_parse(const char *s, long long *secs_r)
{
	long long total = 0;
	const char *p = s;

	if (s == NULL || *s == '\0')
		return -1;
	while (*p != '\0') {
		long long v = 0, mult;

		if (*p < '0' || *p > '9')
			return -1;
		while (*p >= '0' && *p <= '9') {
			int d = *p - '0';

			if (v > (LLONG_MAX - d) / 10)
				return -1;
			v = v * 10 + d;
			p++;
		}
		switch (*p) {
		case 's': mult = 1; break;
		case 'm': mult = 60; break;
		case 'h': mult = 3600; break;
		case 'd': mult = 86400; break;
		case 'w': mult = 7 * 86400; break;
		case '\0':
			/* a bare number is seconds, but only as the whole
			 * value ("1h30" is refused: 30 what?) */
			if (p != s + strspn(s, "0123456789"))
				return -1;
			*secs_r = v;
			return 0;
		default:
			return -1;
		}
		p++;
		if (v > LLONG_MAX / mult)
			return -1;
		v *= mult;
		if (total > LLONG_MAX - v)
			return -1;
		total += v;
	}
	*secs_r = total;
	return 0;
}

char *q_time_format(long long secs, char *buf, size_t size)
{
	static const struct { char c; unsigned long long n; } units[] = {
		{ 'd', 86400 }, { 'h', 3600 }, { 'm', 60 }, { 's', 1 },
	};
	unsigned long long v;
	const char *sign = "";
	size_t i;

	if (size == 0)
		return buf;
	if (secs < 0) {
		sign = "-";
		v = (unsigned long long)(-(secs + 1)) + 1;
	} else {
		v = (unsigned long long)secs;
	}
	if (v == 0) {
		snprintf(buf, size, "0s");
		return buf;
	}
	for (i = 0; i < 4; i++) {
		if (v >= units[i].n)
			break;
	}
	{
		unsigned long long a = v / units[i].n;
		unsigned long long rest = v % units[i].n;

		if (i < 3 && rest / units[i + 1].n > 0)
			snprintf(buf, size, "%s%llu%c%llu%c", sign, a, units[i].c,
				 rest / units[i + 1].n, units[i + 1].c);
		else
			snprintf(buf, size, "%s%llu%c", sign, a, units[i].c);
	}
	return buf;
}

char *q_time_stamp(time_t t, char *buf, size_t size)
{
	struct tm tm;

	if (size == 0)
		return buf;
	if (t == 0 || localtime_r(&t, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "-");
	return buf;
}

/* ------------------------------------------------------------------ */
/* UTF-8 and escaping */

/* Length of the well-formed UTF-8 sequence at s (n bytes available) whose
 * code point is >= min_cp, or 0. Rejects overlongs, surrogates and
 * values above U+10FFFF (RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned long min_cp)
{
	unsigned long cp;
	size_t len, i;
	unsigned char lo = 0x80, hi = 0xBF;

	if (s[0] < 0x80)
		return s[0] >= min_cp ? 1 : 0;
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		len = 2;
		cp = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		cp = s[0] & 0x0F;
		if (s[0] == 0xE0)
			lo = 0xA0;              /* overlong */
		else if (s[0] == 0xED)
			hi = 0x9F;              /* surrogates */
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		cp = s[0] & 0x07;
		if (s[0] == 0xF0)
			lo = 0x90;              /* overlong */
		else if (s[0] == 0xF4)
			hi = 0x8F;              /* > U+10FFFF */
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	cp = (cp << 6) | (s[1] & 0x3F);
	for (i = 2; i < len; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	return cp >= min_cp ? len : 0;
}

/* Escape the item at s for a terminal: writes at most 4 bytes into out,
 * or points *pass at a UTF-8 sequence to copy; returns bytes consumed. */
static size_t term_item(const unsigned char *s, size_t n, bool utf8,
			char out[8], size_t *outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t l;

	if (s[0] == '\\') {
		memcpy(out, "\\\\", 2);
		*outlen = 2;
		return 1;
	}
	if (s[0] >= 0x20 && s[0] <= 0x7e) {
		out[0] = (char)s[0];
		*outlen = 1;
		return 1;
	}
	if (utf8 && s[0] >= 0x80 && (l = utf8_seq(s, n, 0xA0)) > 0) {
		memcpy(out, s, l);
		*outlen = l;
		return l;
	}
	out[0] = '\\';
	out[1] = 'x';
	out[2] = hex[s[0] >> 4];
	out[3] = hex[s[0] & 15];
	*outlen = 4;
	return 1;
}

int q_escape_term(struct q_buf *b, const char *s, size_t n, bool utf8)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t oldlen = b->len, i = 0;

	while (i < n) {
		size_t run = i;
		char out[8];
		size_t ol;

		/* copy plain runs in one go */
		while (run < n && p[run] >= 0x20 && p[run] <= 0x7e && p[run] != '\\')
			run++;
		if (run > i) {
			if (q_buf_add(b, p + i, run - i) < 0)
				goto fail;
			i = run;
			continue;
		}
		i += term_item(p + i, n - i, utf8, out, &ol);
		if (q_buf_add(b, out, ol) < 0)
			goto fail;
	}
	return 0;
fail:
	b->len = oldlen;
	if (b->data != NULL)
		b->data[oldlen] = '\0';
	return -1;
}

void q_fputs_safe(const char *s, FILE *f)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), i = 0;

	while (i < n) {
		char out[8];
		size_t ol;

		i += term_item(p + i, n - i, true, out, &ol);
		fwrite(out, 1, ol, f);
	}
}

int q_json_str(struct q_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t oldlen = b->len, i = 0;

	if (q_buf_addc(b, '"') < 0)
		return -1;
	while (i < n) {
		unsigned char c = p[i];
		char esc[8];
		size_t l;

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
			size_t run = i;

			while (run < n && p[run] >= 0x20 && p[run] < 0x7f &&
			       p[run] != '"' && p[run] != '\\')
				run++;
			if (q_buf_add(b, p + i, run - i) < 0)
				goto fail;
			i = run;
			continue;
		}
		if (c >= 0x80 && (l = utf8_seq(p + i, n - i, 0x80)) > 0) {
			if (q_buf_add(b, p + i, l) < 0)
				goto fail;
			i += l;
			continue;
		}
		switch (c) {
		case '"': memcpy(esc, "\\\"", 3); break;
		case '\\': memcpy(esc, "\\\\", 3); break;
		case '\b': memcpy(esc, "\\b", 3); break;
		case '\f': memcpy(esc, "\\f", 3); break;
		case '\n': memcpy(esc, "\\n", 3); break;
		case '\r': memcpy(esc, "\\r", 3); break;
		case '\t': memcpy(esc, "\\t", 3); break;
		default:
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			esc[6] = '\0';
			break;
		}
		if (q_buf_adds(b, esc) < 0)
			goto fail;
		i++;
	}
	if (q_buf_addc(b, '"') < 0)
		goto fail;
	return 0;
fail:
	b->len = oldlen;
	if (b->data != NULL)
		b->data[oldlen] = '\0';
	return -1;
}

/* ------------------------------------------------------------------ */
/* processes and boots */

int q_boot_id(char *buf, size_t size, const char **error_r)
{
	static const char path[] = "/proc/sys/kernel/random/boot_id";
	const char *env = getenv("QKIT_BOOT_ID");
	char tmp[64];
	ssize_t n;
	size_t len;
	int fd;

	if (size < 40)
		return q_err(error_r, "q_boot_id: buffer too small");
	if (env != NULL && *env != '\0') {
		len = strlen(env);
		if (len >= size)
			return q_err(error_r, "QKIT_BOOT_ID is too long");
		memcpy(buf, env, len + 1);
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return q_err(error_r, "open %s: %s", path, strerror(errno));
	do {
		n = read(fd, tmp, sizeof(tmp) - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;

		close(fd);
		return q_err(error_r, "read %s: %s", path, strerror(e));
	}
	close(fd);
	tmp[n] = '\0';
	len = strcspn(tmp, "\r\n");
	tmp[len] = '\0';
	if (len == 0 || len >= size)
		return q_err(error_r, "%s: unexpected content", path);
	memcpy(buf, tmp, len + 1);
	return 0;
}

bool q_pid_alive(long pid)
{
	if (pid <= 0 || pid > INT_MAX)
		return false;
	if (kill((pid_t)pid, 0) == 0)
		return true;
	return errno != ESRCH;
}
