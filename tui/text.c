/*
 * tui/text.c - text for the screen: escaping, display widths, drawing
 * into fixed columns, the column layout of the lists, string sets.
 *
 * Invariant: every byte that came from mail, from a server or from the
 * spool reaches ncurses only after tx_escape(): q_escape_term (printable
 * ASCII and, in a UTF-8 locale, valid UTF-8 from U+00A0 pass; every other
 * byte becomes \xHH, a backslash \\), and then every character that has
 * no width on the terminal (wcwidth <= 0: combining marks, zero-width and
 * bidirectional controls, unassigned code points) is written as \xHH
 * bytes as well, so that what is drawn is exactly what is measured. In
 * the C locale nothing but ASCII is ever drawn.
 *
 * Widths: ASCII is one column; a UTF-8 character takes wcwidth() columns
 * (the locale's idea, as ncurses uses it). Text is cut at character
 * boundaries, never inside a character or an escape's bytes.
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"

#include <curses.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

static bool utf8_mode;
static struct q_buf scratch;

void tx_setup(bool utf8)
{
	utf8_mode = utf8;
}

bool tx_utf8(void)
{
	return utf8_mode;
}

/* Decode one UTF-8 character of escaped (hence valid) text: its length
 * and code point; 0 for an ASCII byte. */
static size_t u8_dec(const unsigned char *s, size_t n, wchar_t *wc)
{
	size_t len, i;
	wchar_t c;

	if (s[0] < 0x80)
		return 0;
	if (s[0] >= 0xF0) {
		len = 4;
		c = s[0] & 0x07;
	} else if (s[0] >= 0xE0) {
		len = 3;
		c = s[0] & 0x0F;
	} else {
		len = 2;
		c = s[0] & 0x1F;
	}
	if (len > n)
		return 1;     /* cannot happen after q_escape_term */
	for (i = 1; i < len; i++)
		c = (c << 6) | (s[i] & 0x3F);
	*wc = c;
	return len;
}

static int char_width(const unsigned char *s, size_t n, size_t *len_r)
{
	wchar_t wc = 0;
	size_t l = u8_dec(s, n, &wc);
	int w;

	if (l == 0) {
		*len_r = 1;
		return 1;
	}
	*len_r = l;
	w = wcwidth(wc);
	return w;
}

void tx_escape(struct q_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;
	size_t i = 0;

	if (s == NULL)
		return;
	q_buf_reset(&scratch);
	if (q_escape_term(&scratch, s, n, utf8_mode) < 0)
		qtop_oom();
	p = (const unsigned char *)scratch.data;
	if (!utf8_mode) {
		if (q_buf_add(b, scratch.data, scratch.len) < 0)
			qtop_oom();
		return;
	}
	while (i < scratch.len) {
		size_t run = i, l;

		while (run < scratch.len && p[run] < 0x80)
			run++;
		if (run > i && q_buf_add(b, p + i, run - i) < 0)
			qtop_oom();
		i = run;
		if (i >= scratch.len)
			break;
		if (char_width(p + i, scratch.len - i, &l) > 0) {
			if (q_buf_add(b, p + i, l) < 0)
				qtop_oom();
		} else {
			for (size_t k = 0; k < l; k++) {
				char e[4] = { '\\', 'x', hex[p[i + k] >> 4], hex[p[i + k] & 15] };

				if (q_buf_add(b, e, 4) < 0)
					qtop_oom();
			}
		}
		i += l;
	}
}

size_t tx_fit(const char *s, size_t n, int width, int *cols_r)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	int cols = 0;

	while (i < n) {
		size_t l;
		int w = p[i] < 0x80 ? 1 : char_width(p + i, n - i, &l);

		if (p[i] < 0x80)
			l = 1;
		if (w < 0)
			w = 1;
		if (cols + w > width)
			break;
		cols += w;
		i += l;
	}
	if (cols_r != NULL)
		*cols_r = cols;
	return i;
}

int tx_width(const char *s, size_t n)
{
	int cols;

	tx_fit(s, n, 1 << 30, &cols);
	return cols;
}

void tx_put(int y, int x, int width, const char *esc)
{
	size_t n = esc != NULL ? strlen(esc) : 0, fit;
	int cols;

	if (width <= 0)
		return;
	fit = tx_fit(esc != NULL ? esc : "", n, width, &cols);
	move(y, x);
	if (fit > 0)
		addnstr(esc, (int)fit);
	for (; cols < width; cols++)
		addch(' ');
}

void tx_put_raw(int y, int x, int width, const char *raw)
{
	static struct q_buf b;

	q_buf_reset(&b);
	if (raw != NULL)
		tx_escape(&b, raw, strlen(raw));
	tx_put(y, x, width, b.data != NULL ? b.data : "");
}

void tx_put_str(int y, int x, int width, const char *s, bool right)
{
	int n = (int)strlen(s);

	if (width <= 0)
		return;
	move(y, x);
	if (right && n < width) {
		for (int i = 0; i < width - n; i++)
			addch(' ');
		addnstr(s, n);
		return;
	}
	addnstr(s, n < width ? n : width);
	for (int i = n; i < width; i++)
		addch(' ');
}

/* ------------------------------------------------------------------ */
/* column layout */

void cols_layout(struct col *c, int n, int width)
{
	bool on[64];
	int used, extra, i;

	if (n > 64)
		n = 64;
	for (i = 0; i < n; i++)
		on[i] = true;
	for (;;) {
		int k = 0, drop = -1;

		used = 0;
		for (i = 0; i < n; i++) {
			if (!on[i])
				continue;
			used += c[i].min + (k > 0 ? 1 : 0);
			k++;
			if (drop < 0 || c[i].prio > c[drop].prio)
				drop = i;
		}
		if (used <= width || k <= 1)
			break;
		on[drop] = false;
	}
	for (i = 0; i < n; i++)
		c[i].w = on[i] ? c[i].min : 0;
	extra = width - used;
	for (i = 0; i < n && extra > 0; i++) {
		if (c[i].w > 0 && c[i].first && c[i].w < c[i].max) {
			int g = c[i].max - c[i].w < extra ? c[i].max - c[i].w : extra;

			c[i].w += g;
			extra -= g;
		}
	}
	while (extra > 0) {
		bool grew = false;

		for (i = 0; i < n && extra > 0; i++) {
			if (c[i].w > 0 && c[i].w < c[i].max) {
				c[i].w++;
				extra--;
				grew = true;
			}
		}
		if (!grew)
			break;
	}
	used = 0;
	for (i = 0; i < n; i++) {
		if (c[i].w == 0)
			continue;
		c[i].x = used;
		used += c[i].w + 1;
	}
	/* the narrowest screen: the one column left is cut */
	for (i = 0; i < n; i++)
		if (c[i].w > 0 && c[i].x + c[i].w > width)
			c[i].w = width - c[i].x > 0 ? width - c[i].x : 0;
}

void cols_header(const struct col *c, int n, int y, int width)
{
	attrset(ui_attr(UA_HEADER));
	move(y, 0);
	for (int i = 0; i < width; i++)
		addch(' ');
	for (int i = 0; i < n; i++)
		if (c[i].w > 0)
			tx_put_str(y, c[i].x, c[i].w, c[i].title, c[i].right);
	attrset(A_NORMAL);
}

/* ------------------------------------------------------------------ */
/* string sets: open addressing, linear probing, tombstones */

static char tomb[1];

static size_t str_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static size_t sset_find(const struct sset *s, const char *k, bool *found)
{
	size_t i = str_hash(k) & (s->cap - 1), first_tomb = (size_t)-1;

	for (size_t probe = 0; probe < s->cap; probe++) {
		char *v = s->slot[i];

		if (v == NULL) {
			*found = false;
			return first_tomb != (size_t)-1 ? first_tomb : i;
		}
		if (v == tomb) {
			if (first_tomb == (size_t)-1)
				first_tomb = i;
		} else if (strcmp(v, k) == 0) {
			*found = true;
			return i;
		}
		i = (i + 1) & (s->cap - 1);
	}
	*found = false;
	return first_tomb;
}

bool sset_has(const struct sset *s, const char *k)
{
	bool found;

	if (s->n == 0)
		return false;
	sset_find(s, k, &found);
	return found;
}

static void sset_grow(struct sset *s)
{
	struct sset ns = { 0 };

	ns.cap = s->cap != 0 ? s->cap * 2 : 64;
	while (ns.cap < (s->n + 1) * 2)
		ns.cap *= 2;
	ns.slot = calloc(ns.cap, sizeof(*ns.slot));
	if (ns.slot == NULL)
		qtop_oom();
	for (size_t i = 0; i < s->cap; i++) {
		char *v = s->slot[i];
		bool found;

		if (v == NULL || v == tomb)
			continue;
		ns.slot[sset_find(&ns, v, &found)] = v;
		ns.n++;
	}
	free(s->slot);
	*s = ns;
}

void sset_add(struct sset *s, const char *k)
{
	bool found;
	size_t i;

	if (s->cap == 0 || (s->n + 1) * 2 > s->cap)
		sset_grow(s);
	i = sset_find(s, k, &found);
	if (found)
		return;
	if (i == (size_t)-1) {
		sset_grow(s);
		i = sset_find(s, k, &found);
	}
	if ((s->slot[i] = strdup(k)) == NULL)
		qtop_oom();
	s->n++;
}

bool sset_del(struct sset *s, const char *k)
{
	bool found;
	size_t i;

	if (s->n == 0)
		return false;
	i = sset_find(s, k, &found);
	if (!found)
		return false;
	free(s->slot[i]);
	s->slot[i] = tomb;
	s->n--;
	return true;
}

void sset_clear(struct sset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		if (s->slot[i] != NULL && s->slot[i] != tomb)
			free(s->slot[i]);
	free(s->slot);
	memset(s, 0, sizeof(*s));
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

char **sset_list(const struct sset *s, size_t *n_r)
{
	char **v = calloc(s->n + 1, sizeof(*v));
	size_t k = 0;

	if (v == NULL)
		qtop_oom();
	for (size_t i = 0; i < s->cap; i++) {
		if (s->slot[i] == NULL || s->slot[i] == tomb)
			continue;
		if ((v[k++] = strdup(s->slot[i])) == NULL)
			qtop_oom();
	}
	qsort(v, k, sizeof(*v), cmp_strp);
	*n_r = k;
	return v;
}
