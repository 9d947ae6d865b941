/*
 * tui/view_queue.c - the Queue panel: one message per line (age, size,
 * id, sender, first recipient and how many more, state), sorted, filtered,
 * marked; and a per-domain summary (messages, bytes, oldest, qshape's age
 * buckets) of the messages shown.
 *
 * The panel keeps an array of pointers into the rows of the snapshot it
 * was built from (built_q). It is rebuilt (filter, then sort) whenever
 * app.snap carries another queue, and checked before every use, so it
 * never points into a snapshot that was released. Marks are kept by id
 * (a set), so they survive refreshes, sorting and filtering.
 *
 * Cost: a rebuild is O(N) for the filter (substring search in id,
 * sender, recipients and domains) plus O(N log N) for a sort other than
 * by age (the index order is the arrival order); it runs on the main
 * thread when a new snapshot arrives (at most once a second) or when the
 * filter or the sort changes.
 */
#include "config.h"
#include "tui/qtop.h"
#include "bin/cli.h"

#include <curses.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { S_AGE, S_SIZE, S_SENDER, S_DOMAIN };
static const char *const sort_names[] = { "age", "size", "sender", "domain" };

#define NBUCKET 10
static const int bucket_min[NBUCKET] = { 5, 10, 20, 40, 80, 160, 320, 640, 1280, -1 };

struct dom {
	char *name;
	size_t msgs;
	uint64_t bytes;
	time_t oldest;
	size_t b[NBUCKET];
};

static struct {
	const struct qsnap *built_q;
	const struct qrow **vis;
	size_t nvis, capvis;
	size_t cur, top;
	char curid[Q_ID_LEN + 1];
	int sort;
	bool rev;
	char filter[256];
	char saved_filter[256];
	struct sset marks;
	bool domains;
	struct dom *doms;
	size_t ndoms;
	size_t dcur, dtop;
	bool dirty;
} Q;

/* ------------------------------------------------------------------ */
/* building the list */

/* the recipients' text holds every domain too */
static bool row_match(const struct qrow *r, const char *f)
{
	return strcasestr(r->id, f) != NULL || strcasestr(r->sender, f) != NULL ||
	       strcasestr(r->rcpts, f) != NULL;
}

/* Sorting: an array of (integer key, row) pairs, so that comparisons
 * touch no row. By size the key is the size; by sender or domain it is
 * the rank of the string among the distinct strings shown (most queues
 * have far fewer senders and domains than messages, so only those are
 * sorted as strings, by their first 16 bytes packed into two integers
 * and then the rest). Ties go to the row address, which is the id
 * (arrival) order. Case-insensitive for ASCII. */
struct skey {
	uint64_t a;
	const struct qrow *r;
};

static struct skey *skeys;
static size_t capskeys;

static unsigned char low(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* the sort string of a row: the sender, or the domain of the recipient
 * shown (the first pending one) */
static const char *sort_str(const struct qrow *r, int sort, char *stop)
{
	const char *at;

	*stop = '\0';
	if (sort != S_DOMAIN)
		return r->sender;
	at = strrchr(r->rcpt1, '@');
	return at != NULL ? at + 1 : r->rcpt1;
}

static void pack(const char *s, char stop, uint64_t *a, uint64_t *b)
{
	unsigned char buf[16] = { 0 };
	int i;

	for (i = 0; i < 16 && s[i] != '\0' && s[i] != stop; i++)
		buf[i] = low((unsigned char)s[i]);
	*a = *b = 0;
	for (i = 0; i < 8; i++) {
		*a = (*a << 8) | buf[i];
		*b = (*b << 8) | buf[8 + i];
	}
}

static int cmp_rest(const char *p, const char *q, char stop)
{
	for (;; p++, q++) {
		int cp = *p == stop ? 0 : low((unsigned char)*p);
		int cq = *q == stop ? 0 : low((unsigned char)*q);

		if (cp != cq)
			return cp - cq;
		if (cp == 0)
			return 0;
	}
}

static int cmp_skey(const void *x, const void *y)
{
	const struct skey *a = x, *b = y;

	if (a->a != b->a)
		return a->a < b->a ? -1 : 1;
	return a->r < b->r ? -1 : a->r > b->r ? 1 : 0;
}

/* a distinct sort string */
struct dstr {
	const char *s;
	uint64_t a, b;
	uint32_t rank;
};

static int cmp_dstr(const void *x, const void *y, void *ctx)
{
	const struct dstr *a = x, *b = y;
	char stop = *(const char *)ctx;

	if (a->a != b->a)
		return a->a < b->a ? -1 : 1;
	if (a->b != b->b)
		return a->b < b->b ? -1 : 1;
	return (a->b & 0xff) != 0 ? cmp_rest(a->s + 16, b->s + 16, stop) : 0;
}

static size_t hash_str(const char *s, char stop)
{
	size_t h = 1469598103934665603ULL;

	for (; *s != '\0' && *s != stop; s++)
		h = (h ^ low((unsigned char)*s)) * 1099511628211ULL;
	return h;
}

static void rank_strings(int sort)
{
	size_t tcap = 1024, nd = 0, capd = 0;
	uint32_t *tab, *slot_of;     /* tab: index+1 into d */
	struct dstr *d = NULL;
	uint32_t *rank_of;
	char stop = '\0';

	if ((tab = calloc(tcap, sizeof(*tab))) == NULL ||
	    (slot_of = malloc((Q.nvis + 1) * sizeof(*slot_of))) == NULL)
		qtop_oom();
	for (size_t i = 0; i < Q.nvis; i++) {
		char st;
		const char *str = sort_str(Q.vis[i], sort, &st);
		size_t k = hash_str(str, stop) & (tcap - 1);

		while (tab[k] != 0 && cmp_rest(d[tab[k] - 1].s, str, stop) != 0)
			k = (k + 1) & (tcap - 1);
		if (tab[k] == 0) {
			if (nd == capd) {
				size_t ncap = capd != 0 ? capd * 2 : 256;
				struct dstr *v = realloc(d, ncap * sizeof(*v));

				if (v == NULL)
					qtop_oom();
				d = v;
				capd = ncap;
			}
			d[nd].s = str;
			pack(str, stop, &d[nd].a, &d[nd].b);
			d[nd].rank = (uint32_t)nd;
			tab[k] = (uint32_t)++nd;
			if (nd * 2 > tcap) {
				size_t ntcap = tcap * 2;
				uint32_t *nt = calloc(ntcap, sizeof(*nt));

				if (nt == NULL)
					qtop_oom();
				for (size_t j = 0; j < nd; j++) {
					size_t kk = hash_str(d[j].s, stop) & (ntcap - 1);

					while (nt[kk] != 0)
						kk = (kk + 1) & (ntcap - 1);
					nt[kk] = (uint32_t)j + 1;
				}
				free(tab);
				tab = nt;
				tcap = ntcap;
			}
			slot_of[i] = (uint32_t)nd - 1;
		} else {
			slot_of[i] = tab[k] - 1;
		}
	}
	free(tab);
	/* sort the distinct strings; rank_of[original index] = rank */
	if ((rank_of = malloc((nd + 1) * sizeof(*rank_of))) == NULL)
		qtop_oom();
	qsort_r(d, nd, sizeof(*d), cmp_dstr, &stop);
	for (size_t j = 0, r = 0; j < nd; j++) {
		if (j > 0 && cmp_dstr(&d[j - 1], &d[j], &stop) != 0)
			r++;
		rank_of[d[j].rank] = (uint32_t)r;
	}
	for (size_t i = 0; i < Q.nvis; i++) {
		skeys[i].r = Q.vis[i];
		skeys[i].a = rank_of[slot_of[i]];
	}
	free(rank_of);
	free(slot_of);
	free(d);
}

static void sort_vis(int sort)
{

	if (capskeys < Q.nvis) {
		struct skey *v = realloc(skeys, (Q.nvis + 1) * sizeof(*v));

		if (v == NULL)
			qtop_oom();
		skeys = v;
		capskeys = Q.nvis;
	}
	if (sort == S_SIZE) {
		for (size_t i = 0; i < Q.nvis; i++) {
			skeys[i].r = Q.vis[i];
			skeys[i].a = ~(uint64_t)Q.vis[i]->size;     /* largest first */
		}
	} else {
		rank_strings(sort);
	}
	qsort(skeys, Q.nvis, sizeof(*skeys), cmp_skey);
	for (size_t i = 0; i < Q.nvis; i++)
		Q.vis[i] = skeys[i].r;
}

static int bucket_of(long long age)
{
	long long m = age > 0 ? age / 60 : 0;

	for (int b = 0; b < NBUCKET - 1; b++)
		if (m < bucket_min[b])
			return b;
	return NBUCKET - 1;
}

static void doms_free(void)
{
	for (size_t i = 0; i < Q.ndoms; i++)
		free(Q.doms[i].name);
	free(Q.doms);
	Q.doms = NULL;
	Q.ndoms = 0;
}

static int cmp_dom(const void *x, const void *y)
{
	const struct dom *a = x, *b = y;

	if (a->msgs != b->msgs)
		return a->msgs > b->msgs ? -1 : 1;
	if (a->bytes != b->bytes)
		return a->bytes > b->bytes ? -1 : 1;
	return strcmp(a->name, b->name);
}

static size_t dom_hash(const char *p, size_t l)
{
	size_t h = 5381;

	for (size_t k = 0; k < l; k++)
		h = h * 33 + (unsigned char)p[k];
	return h;
}

/* Per-domain summary of the shown messages (the domains of their
 * pending recipients). tab holds indices + 1 into Q.doms. */
static void build_domains(void)
{
	size_t cap = 0, tcap = 1024, *tab;

	doms_free();
	if ((tab = calloc(tcap, sizeof(*tab))) == NULL)
		qtop_oom();
	for (size_t i = 0; i < Q.nvis; i++) {
		const struct qrow *r = Q.vis[i];
		const char *p = r->domains;
		int b = bucket_of((long long)(app.now - r->arrival));

		while (p != NULL && *p != '\0') {
			const char *c = strchr(p, ',');
			size_t l = c != NULL ? (size_t)(c - p) : strlen(p);
			size_t k = dom_hash(p, l) & (tcap - 1), idx;
			struct dom *d;

			while (tab[k] != 0) {
				const char *nm = Q.doms[tab[k] - 1].name;

				if (strncmp(nm, p, l) == 0 && nm[l] == '\0')
					break;
				k = (k + 1) & (tcap - 1);
			}
			if (tab[k] != 0) {
				idx = tab[k] - 1;
			} else {
				if (Q.ndoms == cap) {
					size_t ncap = cap != 0 ? cap * 2 : 64;
					struct dom *nv = realloc(Q.doms, ncap * sizeof(*nv));

					if (nv == NULL)
						qtop_oom();
					Q.doms = nv;
					cap = ncap;
				}
				idx = Q.ndoms;
				d = &Q.doms[idx];
				memset(d, 0, sizeof(*d));
				if ((d->name = strndup(p, l)) == NULL)
					qtop_oom();
				tab[k] = ++Q.ndoms;
				if (Q.ndoms * 2 > tcap) {
					size_t ntcap = tcap * 2, *nt = calloc(ntcap, sizeof(*nt));

					if (nt == NULL)
						qtop_oom();
					for (size_t t = 0; t < Q.ndoms; t++) {
						const char *nm = Q.doms[t].name;
						size_t kk = dom_hash(nm, strlen(nm)) & (ntcap - 1);

						while (nt[kk] != 0)
							kk = (kk + 1) & (ntcap - 1);
						nt[kk] = t + 1;
					}
					free(tab);
					tab = nt;
					tcap = ntcap;
				}
			}
			d = &Q.doms[idx];
			d->msgs++;
			d->bytes += r->size;
			if (d->oldest == 0 || r->arrival < d->oldest)
				d->oldest = r->arrival;
			d->b[b]++;
			p = c != NULL ? c + 1 : NULL;
		}
	}
	free(tab);
	if (Q.ndoms > 1)
		qsort(Q.doms, Q.ndoms, sizeof(*Q.doms), cmp_dom);
	if (Q.dcur >= Q.ndoms)
		Q.dcur = Q.ndoms > 0 ? Q.ndoms - 1 : 0;
}

static void rebuild(void)
{
	const struct qsnap *q = app.snap != NULL ? app.snap->q : NULL;
	size_t i;

	Q.built_q = q;
	Q.dirty = false;
	Q.nvis = 0;
	if (q == NULL)
		return;
	if (Q.capvis < q->n || Q.vis == NULL) {
		const struct qrow **v = realloc(Q.vis, (q->n + 1) * sizeof(*v));

		if (v == NULL)
			qtop_oom();
		Q.vis = v;
		Q.capvis = q->n;
	}
	for (i = 0; i < q->n; i++)
		if (Q.filter[0] == '\0' || row_match(&q->rows[i], Q.filter))
			Q.vis[Q.nvis++] = &q->rows[i];
	/* by age: the index order is the arrival order already */
	if (Q.sort != S_AGE)
		sort_vis(Q.sort);
	if (Q.rev) {
		for (i = 0; i < Q.nvis / 2; i++) {
			const struct qrow *t = Q.vis[i];

			Q.vis[i] = Q.vis[Q.nvis - 1 - i];
			Q.vis[Q.nvis - 1 - i] = t;
		}
	}
	/* the cursor stays on its message when it is still shown */
	if (Q.curid[0] != '\0') {
		for (i = 0; i < Q.nvis; i++)
			if (memcmp(Q.vis[i]->id, Q.curid, Q_ID_LEN) == 0)
				break;
		if (i < Q.nvis)
			Q.cur = i;
	}
	if (Q.cur >= Q.nvis)
		Q.cur = Q.nvis > 0 ? Q.nvis - 1 : 0;
	if (Q.nvis > 0)
		memcpy(Q.curid, Q.vis[Q.cur]->id, Q_ID_LEN + 1);
	if (Q.domains)
		build_domains();
}

static void ensure(void)
{
	const struct qsnap *q = app.snap != NULL ? app.snap->q : NULL;

	if (q != Q.built_q || Q.dirty)
		rebuild();
}

static void set_cursor(size_t c)
{
	Q.cur = c;
	if (Q.nvis > 0)
		memcpy(Q.curid, Q.vis[Q.cur]->id, Q_ID_LEN + 1);
}

void queue_bench(struct snap *s, int sort, const char *filter)
{
	struct snap *keep = app.snap;

	app.snap = s;
	Q.sort = sort;
	Q.rev = false;
	snprintf(Q.filter, sizeof(Q.filter), "%s", filter != NULL ? filter : "");
	rebuild();
	Q.filter[0] = '\0';
	app.snap = keep;
	Q.built_q = NULL;
	Q.sort = S_AGE;
}

/* ------------------------------------------------------------------ */
/* drawing */

/* "in 40s", "in 14m", "in 3h", "in 2d": one unit, rounded up */
const char *short_in(long long secs, char *buf, size_t size)
{
	if (secs < 90)
		snprintf(buf, size, "in %llds", secs);
	else if (secs < 90 * 60)
		snprintf(buf, size, "in %lldm", (secs + 59) / 60);
	else if (secs < 48 * 3600)
		snprintf(buf, size, "in %lldh", (secs + 3599) / 3600);
	else
		snprintf(buf, size, "in %lldd", (secs + 86399) / 86400);
	return buf;
}

static const char *state_of(const struct qrow *r, char *buf, size_t size, int *attr)
{
	const struct snap *s = app.snap;

	*attr = 0;
	for (size_t i = 0; s != NULL && i < s->nsess; i++) {
		if (s->sess[i].msgid != NULL && strcmp(s->sess[i].msgid, r->id) == 0) {
			*attr = ui_attr(UA_SENDING);
			return "sending";
		}
	}
	if (r->flags & Q_ENV_FROZEN) {
		*attr = ui_attr(UA_FROZEN);
		return "frozen";
	}
	if (jobs_delivering(r->id)) {
		*attr = ui_attr(UA_SENDING);
		return "deliver";
	}
	if (r->next_try == 0)
		return "due";
	if (r->next_try <= app.now) {
		*attr = ui_attr(UA_DEFER);
		return "retry due";
	}
	*attr = ui_attr(UA_DEFER);
	return short_in((long long)(r->next_try - app.now), buf, size);
}

static void draw_list(int y0, int h, int w)
{
	struct col c[] = {
		{ "", 1, 1, 0, false, 0, 0, false },
		{ "AGE", 4, 4, 1, true, 0, 0, false },
		{ "SIZE", 5, 5, 5, true, 0, 0, false },
		{ "ID", Q_ID_LEN, Q_ID_LEN, 3, false, 0, 0, false },
		{ "SENDER", 10, 48, 4, false, 0, 0, false },
		{ "RECIPIENT", 14, 60, 2, false, 0, 0, false },
		{ "STATE", 9, 9, 1, false, 0, 0, false },
	};
	int nc = (int)(sizeof(c) / sizeof(c[0])), rows = h - 1;
	struct q_buf b = { 0 };

	cols_layout(c, nc, w);
	cols_header(c, nc, y0, w);
	if (app.snap == NULL || app.snap->q == NULL) {
		tx_put_str(y0 + 1, 1, w - 1, "reading the queue index...", false);
		return;
	}
	if (Q.nvis == 0) {
		tx_put_str(y0 + 1, 1, w - 1, Q.filter[0] != '\0'
			   ? "no message matches the filter (Esc clears it)"
			   : "the queue is empty", false);
		return;
	}
	ui_scroll(Q.cur, Q.nvis, rows, &Q.top);
	for (int i = 0; i < rows && Q.top + (size_t)i < Q.nvis; i++) {
		size_t k = Q.top + (size_t)i;
		const struct qrow *r = Q.vis[k];
		int y = y0 + 1 + i, base = k == Q.cur ? ui_attr(UA_CURSOR) : 0;
		bool marked = Q.marks.n > 0 && sset_has(&Q.marks, r->id);
		char t[32], st[32];
		const char *state;
		int sattr;

		if (marked)
			base |= ui_attr(UA_MARK);
		attrset(base);
		move(y, 0);
		for (int x = 0; x < w; x++)
			addch(' ');
		if (c[0].w > 0)
			tx_put_str(y, c[0].x, c[0].w, marked ? "*" : "", false);
		if (c[1].w > 0)
			tx_put_str(y, c[1].x, c[1].w,
				   cli_fmt_age((long long)(app.now - r->arrival), t, sizeof(t)),
				   true);
		if (c[2].w > 0)
			tx_put_str(y, c[2].x, c[2].w, cli_fmt_size(r->size, t, sizeof(t)),
				   true);
		if (c[3].w > 0)
			tx_put_str(y, c[3].x, c[3].w, r->id, false);
		if (c[4].w > 0)
			tx_put_raw(y, c[4].x, c[4].w, r->sender[0] != '\0' ? r->sender : "<>");
		if (c[5].w > 0) {
			uint32_t more = r->npending > 0 ? r->npending - 1
				      : r->nrcpt > 0 ? r->nrcpt - 1 : 0;
			int mw = 0;

			if (more > 0) {
				snprintf(t, sizeof(t), " +%u", (unsigned)more);
				mw = (int)strlen(t);
				if (mw >= c[5].w)
					mw = 0;
			}
			q_buf_reset(&b);
			tx_escape(&b, r->rcpt1, strlen(r->rcpt1));
			if (mw > 0) {
				int used;
				size_t fit = tx_fit(b.data, b.len, c[5].w - mw, &used);

				b.len = fit;
				b.data[fit] = '\0';
				tx_put(y, c[5].x, used, b.data);
				tx_put_str(y, c[5].x + used, c[5].w - used, t, false);
			} else {
				tx_put(y, c[5].x, c[5].w, b.data);
			}
		}
		if (c[6].w > 0) {
			state = state_of(r, st, sizeof(st), &sattr);
			attrset(k == Q.cur ? base | sattr : sattr | (marked ? ui_attr(UA_MARK) : 0));
			tx_put_str(y, c[6].x, c[6].w, state, false);
		}
		attrset(A_NORMAL);
	}
	q_buf_free(&b);
}

static void draw_domains(int y0, int h, int w)
{
	struct col c[4 + NBUCKET] = {
		{ "DOMAIN", 16, 60, 0, false, 0, 0, false },
		{ "MSGS", 6, 6, 0, true, 0, 0, false },
		{ "BYTES", 6, 6, 1, true, 0, 0, false },
		{ "OLDEST", 6, 6, 1, true, 0, 0, false },
	};
	static char titles[NBUCKET][16];
	int nc = 4 + NBUCKET, rows = h - 1;

	for (int k = 0; k < NBUCKET; k++) {
		if (bucket_min[k] < 0)
			snprintf(titles[k], sizeof(titles[k]), "%d+", bucket_min[k - 1]);
		else
			snprintf(titles[k], sizeof(titles[k]), "<%d", bucket_min[k]);
		c[4 + k].title = titles[k];
		c[4 + k].min = c[4 + k].max = 5;
		c[4 + k].prio = 2 + k;
		c[4 + k].right = true;
	}
	cols_layout(c, nc, w);
	cols_header(c, nc, y0, w);
	if (Q.ndoms == 0) {
		tx_put_str(y0 + 1, 1, w - 1, "no pending recipients", false);
		return;
	}
	ui_scroll(Q.dcur, Q.ndoms, rows, &Q.dtop);
	for (int i = 0; i < rows && Q.dtop + (size_t)i < Q.ndoms; i++) {
		size_t k = Q.dtop + (size_t)i;
		const struct dom *d = &Q.doms[k];
		int y = y0 + 1 + i;
		char t[32];

		attrset(k == Q.dcur ? ui_attr(UA_CURSOR) : 0);
		move(y, 0);
		for (int x = 0; x < w; x++)
			addch(' ');
		tx_put_raw(y, c[0].x, c[0].w, d->name);
		snprintf(t, sizeof(t), "%zu", d->msgs);
		tx_put_str(y, c[1].x, c[1].w, t, true);
		if (c[2].w > 0)
			tx_put_str(y, c[2].x, c[2].w, cli_fmt_size(d->bytes, t, sizeof(t)), true);
		if (c[3].w > 0)
			tx_put_str(y, c[3].x, c[3].w,
				   cli_fmt_age((long long)(app.now - d->oldest), t, sizeof(t)),
				   true);
		for (int b = 0; b < NBUCKET; b++) {
			if (c[4 + b].w == 0)
				continue;
			snprintf(t, sizeof(t), "%zu", d->b[b]);
			tx_put_str(y, c[4 + b].x, c[4 + b].w, d->b[b] > 0 ? t : ".", true);
		}
		attrset(A_NORMAL);
	}
}

static void q_draw(int y0, int h, int w)
{
	ensure();
	if (Q.domains)
		draw_domains(y0, h, w);
	else
		draw_list(y0, h, w);
}

/* ------------------------------------------------------------------ */
/* keys */

/* the marked messages, else the one under the cursor */
static char **selected(size_t *n_r)
{
	char **v;

	if (Q.marks.n > 0)
		return sset_list(&Q.marks, n_r);
	*n_r = 0;
	if ((v = calloc(2, sizeof(*v))) == NULL)
		qtop_oom();
	if (Q.nvis > 0) {
		if ((v[0] = strdup(Q.vis[Q.cur]->id)) == NULL)
			qtop_oom();
		*n_r = 1;
	}
	return v;
}

static void filter_changed(const char *text, int state)
{
	if (state < 0)
		snprintf(Q.filter, sizeof(Q.filter), "%s", Q.saved_filter);
	else
		snprintf(Q.filter, sizeof(Q.filter), "%s", text);
	Q.dirty = true;
	if (state == 0)
		return;           /* rebuilt once when drawn, after typeahead */
	ensure();
	if (state == 1 && Q.filter[0] != '\0')
		ui_status(false, "%zu message%s match", Q.nvis, Q.nvis == 1 ? "" : "s");
}

static void set_sort(int s)
{
	if (Q.sort == s)
		Q.rev = !Q.rev;
	else
		Q.rev = false;
	Q.sort = s;
	Q.dirty = true;
}

static int domain_key(int ch)
{
	if (ui_nav(ch, Q.ndoms, &Q.dcur, ui_list_height()))
		return K_HANDLED;
	switch (ch) {
	case '\r': case '\n': case KEY_ENTER:
		if (Q.ndoms > 0) {
			snprintf(Q.filter, sizeof(Q.filter), "@%s", Q.doms[Q.dcur].name);
			Q.domains = false;
			Q.dirty = true;
			Q.cur = 0;
			Q.curid[0] = '\0';
		}
		return K_HANDLED;
	case 's': case 27: case KEY_LEFT:
		Q.domains = false;
		return K_HANDLED;
	default:
		return 0;
	}
}

static int q_key(int ch)
{
	size_t n, c;
	char **ids;

	ensure();
	if (Q.domains)
		return domain_key(ch);
	c = Q.cur;
	if (ui_nav(ch, Q.nvis, &c, ui_list_height())) {
		set_cursor(c);
		return K_HANDLED;
	}
	switch (ch) {
	case '\r': case '\n': case KEY_ENTER:
		if (Q.nvis > 0)
			msg_open(Q.vis[Q.cur]->id);
		return K_HANDLED;
	case ' ':
		if (Q.nvis > 0) {
			const char *id = Q.vis[Q.cur]->id;

			if (!sset_del(&Q.marks, id))
				sset_add(&Q.marks, id);
			if (Q.cur + 1 < Q.nvis)
				set_cursor(Q.cur + 1);
		}
		return K_HANDLED;
	case 'a':
		for (size_t i = 0; i < Q.nvis; i++)
			sset_add(&Q.marks, Q.vis[i]->id);
		ui_status(false, "%zu message%s marked", Q.marks.n, Q.marks.n == 1 ? "" : "s");
		return K_HANDLED;
	case 'u':
		sset_clear(&Q.marks);
		ui_status(false, "no message marked");
		return K_HANDLED;
	case 'd':
		ids = selected(&n);
		act_messages(JOB_DELIVER, ids, n);
		return K_HANDLED;
	case 'f':
		ids = selected(&n);
		act_messages(JOB_FREEZE, ids, n);
		return K_HANDLED;
	case 't':
		ids = selected(&n);
		act_messages(JOB_THAW, ids, n);
		return K_HANDLED;
	case 'x': case KEY_DC:
		ids = selected(&n);
		if (Q.marks.n > 0)
			sset_clear(&Q.marks);   /* they are about to go */
		act_messages(JOB_REMOVE, ids, n);
		return K_HANDLED;
	case '/':
		snprintf(Q.saved_filter, sizeof(Q.saved_filter), "%s", Q.filter);
		ui_input("filter:", Q.filter, filter_changed);
		return K_HANDLED;
	case 27:
		if (Q.filter[0] != '\0') {
			Q.filter[0] = '\0';
			Q.dirty = true;
			ui_status(false, "filter cleared");
		}
		return K_HANDLED;
	case 'A': set_sort(S_AGE); return K_HANDLED;
	case 'S': set_sort(S_SIZE); return K_HANDLED;
	case 'F': set_sort(S_SENDER); return K_HANDLED;
	case 'D': set_sort(S_DOMAIN); return K_HANDLED;
	case 's':
		Q.domains = true;
		build_domains();
		return K_HANDLED;
	default:
		return 0;
	}
}

static const char *q_hints(void)
{
	if (Q.domains)
		return "Enter: filter the queue by this domain  s/Esc: back to the list  ?: help";
	return "? help  Enter view  Spc mark  d deliver  f freeze  t thaw  x remove  "
	       "/ filter  A S F D sort  s domains  q quit";
}

static void q_label(char *buf, size_t size)
{
	ensure();
	if (app.snap == NULL || app.snap->q == NULL)
		snprintf(buf, size, "Queue");
	else if (Q.filter[0] != '\0')
		snprintf(buf, size, "Queue %zu/%zu", Q.nvis, app.snap->q->n);
	else
		snprintf(buf, size, "Queue %zu", app.snap->q->n);
}

static void q_info(char *buf, size_t size)
{
	static const char *const dir[4][2] = {
		{ "oldest first", "newest first" }, { "largest first", "smallest first" },
		{ "a-z", "z-a" }, { "a-z", "z-a" },
	};
	size_t l;

	if (Q.domains) {
		snprintf(buf, size, "per domain: %zu domains of %zu shown messages",
			 Q.ndoms, Q.nvis);
		return;
	}
	l = (size_t)snprintf(buf, size, "sort: %s (%s)", sort_names[Q.sort],
			     dir[Q.sort][Q.rev ? 1 : 0]);
	if (Q.filter[0] != '\0' && l < size)
		l += (size_t)snprintf(buf + l, size - l, "  filter: %s", Q.filter);
	if (Q.marks.n > 0 && l < size)
		snprintf(buf + l, size - l, "  %zu marked", Q.marks.n);
}

static void q_data(void)
{
	ensure();
}

const struct panel queue_panel = {
	.name = "Queue",
	.data = q_data,
	.draw = q_draw,
	.key = q_key,
	.hints = q_hints,
	.label = q_label,
	.info = q_info,
};
