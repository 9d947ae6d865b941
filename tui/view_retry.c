/*
 * tui/view_retry.c - the Retry panel: one retry record per line (key,
 * host, IP, error kind, first failed, last try, next try, expired marked,
 * error text), sorted, filtered, marked; a detail pane for the record
 * under the cursor with the messages waiting for it.
 *
 * The records come from the snapshot's rsnap (the fetcher reads the
 * retry database every second while this view is shown). The waiting
 * messages are asked from the fetcher for the record under the cursor
 * (data_want_wait) and shown when the answer arrives, so moving the
 * cursor never waits for the database.
 *
 * Actions: r (retry now: q_retry_clear, and the waiting messages are made
 * due), x (delete: q_retry_clear, after a y/n), d (deliver now the
 * messages waiting for the record's host), all on the marked records or
 * the current one, done by the action/delivery workers (jobs.c).
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"
#include "q/addr.h"

#include <curses.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { R_KEY, R_NEXT, R_FIRST, R_LAST, R_ERROR };
static const char *const sort_names[] = {
	"key", "next try", "first failed", "last try", "error",
};

static struct {
	const struct rsnap *built;
	const struct rrow **vis;
	size_t nvis, cap;
	size_t cur, top;
	char *curkey;
	int sort;
	bool rev;
	char filter[256], saved[256];
	struct sset marks;
	bool dirty;
	bool nodetail;
} R;

static bool match(const struct rrow *r, const char *f)
{
	return strcasestr(r->key, f) != NULL || strcasestr(r->rec.kind, f) != NULL ||
	       (r->rec.text != NULL && strcasestr(r->rec.text, f) != NULL);
}

static int cmp_key(const void *x, const void *y)
{
	const struct rrow *a = *(const struct rrow *const *)x;
	const struct rrow *b = *(const struct rrow *const *)y;

	return strcmp(a->key, b->key);
}

static int cmp_time(time_t a, time_t b)
{
	return a < b ? -1 : a > b ? 1 : 0;
}

static int cmp_next(const void *x, const void *y)
{
	const struct rrow *a = *(const struct rrow *const *)x;
	const struct rrow *b = *(const struct rrow *const *)y;
	int c = cmp_time(a->rec.next_try, b->rec.next_try);

	return c != 0 ? c : cmp_key(x, y);
}

static int cmp_first(const void *x, const void *y)
{
	const struct rrow *a = *(const struct rrow *const *)x;
	const struct rrow *b = *(const struct rrow *const *)y;
	int c = cmp_time(a->rec.first_failed, b->rec.first_failed);

	return c != 0 ? c : cmp_key(x, y);
}

static int cmp_last(const void *x, const void *y)
{
	const struct rrow *a = *(const struct rrow *const *)x;
	const struct rrow *b = *(const struct rrow *const *)y;
	int c = cmp_time(b->rec.last_try, a->rec.last_try);   /* newest first */

	return c != 0 ? c : cmp_key(x, y);
}

static int cmp_error(const void *x, const void *y)
{
	const struct rrow *a = *(const struct rrow *const *)x;
	const struct rrow *b = *(const struct rrow *const *)y;
	int c = strcmp(a->rec.kind, b->rec.kind);

	if (c == 0)
		c = a->rec.code - b->rec.code;
	return c != 0 ? c : cmp_key(x, y);
}

static void rebuild(void)
{
	const struct rsnap *r = app.snap != NULL ? app.snap->r : NULL;
	static int (*const cmp[])(const void *, const void *) = {
		cmp_key, cmp_next, cmp_first, cmp_last, cmp_error,
	};
	size_t i;

	R.built = r;
	R.dirty = false;
	R.nvis = 0;
	if (r == NULL)
		return;
	if (R.cap < r->n || R.vis == NULL) {
		const struct rrow **v = realloc(R.vis, (r->n + 1) * sizeof(*v));

		if (v == NULL)
			qtop_oom();
		R.vis = v;
		R.cap = r->n;
	}
	for (i = 0; i < r->n; i++)
		if (R.filter[0] == '\0' || match(&r->rows[i], R.filter))
			R.vis[R.nvis++] = &r->rows[i];
	qsort(R.vis, R.nvis, sizeof(*R.vis), cmp[R.sort]);
	if (R.rev) {
		for (i = 0; i < R.nvis / 2; i++) {
			const struct rrow *t = R.vis[i];

			R.vis[i] = R.vis[R.nvis - 1 - i];
			R.vis[R.nvis - 1 - i] = t;
		}
	}
	if (R.curkey != NULL) {
		for (i = 0; i < R.nvis; i++)
			if (strcmp(R.vis[i]->key, R.curkey) == 0)
				break;
		if (i < R.nvis)
			R.cur = i;
	}
	if (R.cur >= R.nvis)
		R.cur = R.nvis > 0 ? R.nvis - 1 : 0;
	free(R.curkey);
	R.curkey = R.nvis > 0 ? strdup(R.vis[R.cur]->key) : NULL;
}

static void ensure(void)
{
	const struct rsnap *r = app.snap != NULL ? app.snap->r : NULL;

	if (r != R.built || R.dirty)
		rebuild();
}

static void set_cursor(size_t c)
{
	R.cur = c;
	free(R.curkey);
	R.curkey = R.nvis > 0 ? strdup(R.vis[c]->key) : NULL;
}

/* ------------------------------------------------------------------ */

static const char *next_text(const struct rrow *r, char *buf, size_t size, int *attr)
{
	*attr = 0;
	if (r->rec.expired) {
		*attr = ui_attr(UA_ERROR);
		return "expired";
	}
	if (r->rec.next_try <= app.now) {
		*attr = ui_attr(UA_OK);
		return "due";
	}
	*attr = ui_attr(UA_DEFER);
	return short_in((long long)(r->rec.next_try - app.now), buf, size);
}

static void kind_text(const struct rrow *r, char *buf, size_t size)
{
	if (r->rec.code != 0)
		snprintf(buf, size, "%s %d", r->rec.kind[0] ? r->rec.kind : "error",
			 r->rec.code);
	else
		snprintf(buf, size, "%s", r->rec.kind[0] ? r->rec.kind : "error");
}

static void ago(time_t t, char *buf, size_t size)
{
	if (t == 0)
		snprintf(buf, size, "-");
	else
		q_time_format((long long)(app.now - t), buf, size);
}

static void draw_detail(int y, int h, int w)
{
	const struct rrow *r = R.vis[R.cur];
	const struct snap *s = app.snap;
	struct q_buf b = { 0 };
	char t1[32], t2[32], d[16], kind[64];
	int line = 0;

	attrset(ui_attr(UA_HEADER));
	move(y, 0);
	for (int x = 0; x < w; x++)
		addch(' ');
	tx_put_raw(y, 1, w - 1, r->key);
	attrset(A_NORMAL);
	line++;

	/* host, IP, port; or what kind of key it is */
	if (r->type == 'T') {
		q_buf_adds(&b, "host ");
		q_buf_adds(&b, r->host != NULL ? r->host : "-");
		q_buf_adds(&b, "   IP ");
		q_buf_adds(&b, r->ip != NULL ? r->ip : "(any: the key has no IP)");
		q_buf_printf(&b, "   port %u", r->port != 0 ? r->port : 25);
	} else if (r->type == 'R') {
		q_buf_adds(&b, "routing retry for the domain ");
		q_buf_adds(&b, r->host != NULL ? r->host : "-");
	} else {
		q_buf_adds(&b, "an address deferred by every host, for message ");
		q_buf_adds(&b, r->msgid != NULL ? r->msgid : "-");
	}
	if (line < h)
		tx_put_raw(y + line++, 1, w - 1, b.data);
	q_buf_reset(&b);
	kind_text(r, kind, sizeof(kind));
	q_buf_printf(&b, "error: %s", kind);
	if (r->rec.err != 0)
		q_buf_printf(&b, " (errno %d)", r->rec.err);
	if (r->rec.text != NULL && r->rec.text[0] != '\0') {
		q_buf_adds(&b, ": ");
		q_buf_adds(&b, r->rec.text);
	}
	if (line < h)
		tx_put_raw(y + line++, 1, w - 1, b.data);
	q_buf_reset(&b);
	ago(r->rec.first_failed, t1, sizeof(t1));
	ago(r->rec.last_try, t2, sizeof(t2));
	q_buf_printf(&b, "first failed %s ago, last try %s ago, next try ", t1, t2);
	if (r->rec.next_try > app.now)
		q_buf_printf(&b, "in %s (%s)", q_time_format((long long)(r->rec.next_try -
								 app.now), d, sizeof(d)),
			     q_time_stamp(r->rec.next_try, t1, sizeof(t1)));
	else
		q_buf_adds(&b, "due");
	if (r->rec.expired)
		q_buf_adds(&b, "; EXPIRED: past the rule's final cutoff");
	if (line < h) {
		attrset(r->rec.expired ? ui_attr(UA_ERROR) : 0);
		tx_put_str(y + line++, 1, w - 1, b.data, false);
		attrset(A_NORMAL);
	}
	q_buf_reset(&b);
	if (s == NULL || s->wait_key == NULL || strcmp(s->wait_key, r->key) != 0) {
		q_buf_adds(&b, "waiting messages: looking...");
	} else if (s->nwait == 0) {
		q_buf_adds(&b, "waiting messages: none on the queue");
	} else {
		q_buf_printf(&b, "waiting: %zu message%s (d delivers them now):", s->nwait,
			     s->nwait == 1 ? "" : "s");
		for (size_t i = 0; i < s->nwait && b.len < 4000; i++)
			q_buf_printf(&b, " %s", s->wait_ids[i]);
	}
	/* the list of ids may take the remaining lines */
	while (line < h && b.len > 0) {
		int used;
		size_t fit = tx_fit(b.data, b.len, w - 1, &used);

		tx_put_str(y + line++, 1, w - 1, b.data, false);
		if (fit >= b.len)
			break;
		memmove(b.data, b.data + fit, b.len - fit + 1);
		b.len -= fit;
	}
	q_buf_free(&b);
}

static void r_draw(int y0, int h, int w)
{
	struct col c[] = {
		{ "", 1, 1, 0, false, 0, 0, false },
		{ "KEY", 26, 44, 0, false, 0, 0, true },
		{ "HOST", 12, 24, 8, false, 0, 0, false },
		{ "IP", 15, 24, 7, false, 0, 0, false },
		{ "ERROR", 12, 16, 1, false, 0, 0, true },
		{ "FIRST", 6, 6, 3, true, 0, 0, false },
		{ "LAST", 6, 6, 4, true, 0, 0, false },
		{ "NEXT", 7, 7, 1, false, 0, 0, false },
		{ "TEXT", 20, 400, 2, false, 0, 0, false },
	};
	int nc = (int)(sizeof(c) / sizeof(c[0])), rows, dh;

	ensure();
	cols_layout(c, nc, w);
	cols_header(c, nc, y0, w);
	if (app.snap == NULL || app.snap->r == NULL) {
		tx_put_str(y0 + 1, 1, w - 1, "reading the retry records...", false);
		return;
	}
	if (R.nvis == 0) {
		data_want_wait(NULL);
		tx_put_str(y0 + 1, 1, w - 1, R.filter[0] != '\0'
			   ? "no retry record matches the filter (Esc clears it)"
			   : "no retry records: every host was reachable at its last try",
			   false);
		return;
	}
	data_want_wait(R.vis[R.cur]->key);
	dh = !R.nodetail && h >= 14 ? 6 : 0;
	rows = h - 1 - dh;
	ui_scroll(R.cur, R.nvis, rows, &R.top);
	for (int i = 0; i < rows && R.top + (size_t)i < R.nvis; i++) {
		size_t k = R.top + (size_t)i;
		const struct rrow *r = R.vis[k];
		int y = y0 + 1 + i, base = k == R.cur ? ui_attr(UA_CURSOR) : 0, na;
		bool marked = R.marks.n > 0 && sset_has(&R.marks, r->key);
		char t[64];
		const char *nt;

		if (marked)
			base |= ui_attr(UA_MARK);
		attrset(base);
		move(y, 0);
		for (int x = 0; x < w; x++)
			addch(' ');
		if (c[0].w > 0)
			tx_put_str(y, c[0].x, 1, marked ? "*" : "", false);
		tx_put_raw(y, c[1].x, c[1].w, r->key);
		if (c[2].w > 0)
			tx_put_raw(y, c[2].x, c[2].w, r->host != NULL ? r->host : "-");
		if (c[3].w > 0)
			tx_put_raw(y, c[3].x, c[3].w, r->ip != NULL ? r->ip : "-");
		if (c[4].w > 0) {
			kind_text(r, t, sizeof(t));
			tx_put_raw(y, c[4].x, c[4].w, t);
		}
		if (c[5].w > 0) {
			ago(r->rec.first_failed, t, sizeof(t));
			tx_put_str(y, c[5].x, c[5].w, t, true);
		}
		if (c[6].w > 0) {
			ago(r->rec.last_try, t, sizeof(t));
			tx_put_str(y, c[6].x, c[6].w, t, true);
		}
		if (c[7].w > 0) {
			nt = next_text(r, t, sizeof(t), &na);
			attrset(k == R.cur ? base | na : na | (marked ? ui_attr(UA_MARK) : 0));
			tx_put_str(y, c[7].x, c[7].w, nt, false);
			attrset(base);
		}
		if (c[8].w > 0)
			tx_put_raw(y, c[8].x, c[8].w, r->rec.text != NULL ? r->rec.text : "");
		attrset(A_NORMAL);
	}
	if (dh > 0)
		draw_detail(y0 + h - dh, dh, w);
}

/* ------------------------------------------------------------------ */

static char **selected(size_t *n_r)
{
	char **v;

	if (R.marks.n > 0)
		return sset_list(&R.marks, n_r);
	*n_r = 0;
	if ((v = calloc(2, sizeof(*v))) == NULL)
		qtop_oom();
	if (R.nvis > 0) {
		if ((v[0] = strdup(R.vis[R.cur]->key)) == NULL)
			qtop_oom();
		*n_r = 1;
	}
	return v;
}

struct del_arg {
	char **keys;
	size_t n;
};

static void del_free(void *p)
{
	struct del_arg *a = p;

	q_strv_free(&a->keys, a->n);
	free(a);
}

static void del_go(void *p)
{
	struct del_arg *a = p;

	jobs_submit(JOB_RETRY_DELETE, a->keys, a->n);
	ui_status(false, "deleting %zu retry record%s...", a->n, a->n == 1 ? "" : "s");
	a->keys = NULL;
	a->n = 0;
	sset_clear(&R.marks);
}

static void filter_changed(const char *text, int state)
{
	if (state < 0)
		snprintf(R.filter, sizeof(R.filter), "%s", R.saved);
	else
		snprintf(R.filter, sizeof(R.filter), "%s", text);
	R.dirty = true;
}

static void set_sort(int s)
{
	R.rev = R.sort == s ? !R.rev : false;
	R.sort = s;
	R.dirty = true;
}

static int r_key(int ch)
{
	size_t n, c;
	char **keys, q[300];

	ensure();
	c = R.cur;
	if (ui_nav(ch, R.nvis, &c, ui_list_height())) {
		set_cursor(c);
		return K_HANDLED;
	}
	switch (ch) {
	case ' ':
		if (R.nvis > 0) {
			const char *k = R.vis[R.cur]->key;

			if (!sset_del(&R.marks, k))
				sset_add(&R.marks, k);
			if (R.cur + 1 < R.nvis)
				set_cursor(R.cur + 1);
		}
		return K_HANDLED;
	case 'a':
		for (size_t i = 0; i < R.nvis; i++)
			sset_add(&R.marks, R.vis[i]->key);
		ui_status(false, "%zu retry record%s marked", R.marks.n,
			  R.marks.n == 1 ? "" : "s");
		return K_HANDLED;
	case 'u':
		sset_clear(&R.marks);
		ui_status(false, "no retry record marked");
		return K_HANDLED;
	case 'r':
		keys = selected(&n);
		if (n == 0) {
			q_strv_free(&keys, n);
			ui_status(true, "no retry record selected");
			return K_HANDLED;
		}
		ui_status(false, "retry now: clearing %zu record%s...", n, n == 1 ? "" : "s");
		jobs_submit(JOB_RETRY_NOW, keys, n);
		sset_clear(&R.marks);
		return K_HANDLED;
	case 'd':
		keys = selected(&n);
		if (n == 0) {
			q_strv_free(&keys, n);
			ui_status(true, "no retry record selected");
			return K_HANDLED;
		}
		ui_status(false, "deliver now: the messages waiting for %zu record%s",
			  n, n == 1 ? "" : "s");
		jobs_submit(JOB_DELIVER_KEYS, keys, n);
		return K_HANDLED;
	case 'x': case KEY_DC: {
		struct del_arg *a;

		keys = selected(&n);
		if (n == 0) {
			q_strv_free(&keys, n);
			ui_status(true, "no retry record selected");
			return K_HANDLED;
		}
		if ((a = calloc(1, sizeof(*a))) == NULL)
			qtop_oom();
		a->keys = keys;
		a->n = n;
		/* raw: the status line escapes what it draws */
		if (n == 1)
			snprintf(q, sizeof(q), "Delete the retry record %s?", keys[0]);
		else
			snprintf(q, sizeof(q), "Delete %zu retry records?", n);
		ui_confirm(q, del_go, a, del_free);
		return K_HANDLED;
	}
	case '/':
		snprintf(R.saved, sizeof(R.saved), "%s", R.filter);
		ui_input("filter:", R.filter, filter_changed);
		return K_HANDLED;
	case 27:
		if (R.filter[0] != '\0') {
			R.filter[0] = '\0';
			R.dirty = true;
			ui_status(false, "filter cleared");
		}
		return K_HANDLED;
	case '\r': case '\n': case KEY_ENTER:
		R.nodetail = !R.nodetail;
		return K_HANDLED;
	case 'K': set_sort(R_KEY); return K_HANDLED;
	case 'N': set_sort(R_NEXT); return K_HANDLED;
	case 'F': set_sort(R_FIRST); return K_HANDLED;
	case 'L': set_sort(R_LAST); return K_HANDLED;
	case 'E': set_sort(R_ERROR); return K_HANDLED;
	default:
		return 0;
	}
}

static const char *r_hints(void)
{
	return "? help  r retry now  x delete  d deliver waiting  Spc mark  / filter  "
	       "K N F L E sort  Enter details  q quit";
}

static void r_label(char *buf, size_t size)
{
	ensure();
	if (app.snap == NULL || app.snap->r == NULL)
		snprintf(buf, size, "Retry");
	else if (R.filter[0] != '\0')
		snprintf(buf, size, "Retry %zu/%zu", R.nvis, app.snap->r->n);
	else
		snprintf(buf, size, "Retry %zu", app.snap->r->n);
}

static void r_info(char *buf, size_t size)
{
	size_t l = (size_t)snprintf(buf, size, "sort: %s%s", sort_names[R.sort],
				    R.rev ? " (reversed)" : "");

	if (R.filter[0] != '\0' && l < size)
		l += (size_t)snprintf(buf + l, size - l, "  filter: %s", R.filter);
	if (R.marks.n > 0 && l < size)
		snprintf(buf + l, size - l, "  %zu marked", R.marks.n);
}

static void r_data(void)
{
	ensure();
}

const struct panel retry_panel = {
	.name = "Retry",
	.data = r_data,
	.draw = r_draw,
	.key = r_key,
	.hints = r_hints,
	.label = r_label,
	.info = r_info,
};
